"""The inference thread: dynamic batching of image requests and video batches, all
PyTorch work on one thread, several forward passes at once where the detector runs
them (OpenVINO's streams), and what happens when the model cannot be loaded."""

from __future__ import annotations

import threading

import pytest

from engine import decode_image
from engine.batching import DynamicBatcher


class RecordingDetector:
    """A real detector that notes, per call, the thread and the batch it ran."""

    def __init__(self, detector):
        self.detector = detector
        self.calls: list[tuple[str, int]] = []

    def options(self, **params):
        return self.detector.options(**params)

    def detect_each(self, images, options):
        self.calls.append((threading.current_thread().name, len(images)))
        if self.on_call is not None:
            self.on_call(len(self.calls))
        return self.detector.detect_each(images, options)

    on_call = None  # called with the number of calls so far, as each starts


@pytest.fixture(scope="module")
def images(darknet_dir):
    return {name: decode_image((darknet_dir / f"{name}.jpg").read_bytes())
            for name in ("dog", "horses", "person", "eagle")}


def gated_batcher(detector, *, max_batch: int, bulk_slice: int = 0, bulk_every: int = 3):
    """A batcher whose thread waits for ``gate`` before loading: everything submitted
    before that is queued, as under load."""
    gate, loaded_on = threading.Event(), []

    def load():
        gate.wait(30)
        loaded_on.append(threading.current_thread().name)
        return detector

    batcher = DynamicBatcher(load, max_batch=max_batch, max_wait=0.0, bulk_slice=bulk_slice,
                             bulk_every=bulk_every, name="pmr-inference-t")
    return batcher, gate, loaded_on


def test_queued_requests_share_batches_and_each_gets_its_own_answer(tiny_fp32, images):
    recording = RecordingDetector(tiny_fp32)
    batcher, gate, loaded_on = gated_batcher(recording, max_batch=4)
    options = tiny_fp32.options()
    strict = tiny_fp32.options(min_confidence=0.9)
    dog = batcher.submit(images["dog"], options)
    frames = batcher.submit_many([images["horses"], images["person"], images["eagle"]],
                                 [options] * 3)
    lone = batcher.submit(images["dog"], strict)
    gate.set()

    assert [d.label for d in dog.result(60).detections] == \
        [d.label for d in tiny_fp32.detect([images["dog"]])[0]]
    for image, result in zip(("horses", "person", "eagle"), frames.result(60), strict=True):
        assert result.detections == tiny_fp32.detect([images[image]])[0]
        assert result.batch_size == 4
    assert lone.result(60).batch_size == 1  # the batch was full: it ran next, alone
    assert all(d.confidence >= 0.9 for d in lone.result().detections)
    assert recording.calls == [("pmr-inference-t", 4), ("pmr-inference-t", 1)]
    assert loaded_on == ["pmr-inference-t"]  # loading too ran on the inference thread


def test_a_request_that_would_overflow_the_batch_starts_the_next_one(tiny_fp32, images):
    recording = RecordingDetector(tiny_fp32)
    batcher, gate, _ = gated_batcher(recording, max_batch=4)
    options = [tiny_fp32.options()] * 3
    first = batcher.submit_many([images["dog"]] * 3, options)
    second = batcher.submit_many([images["horses"]] * 3, options)
    gate.set()
    assert [r.batch_size for r in first.result(60)] == [3, 3, 3]
    assert second.result(60)[0].detections == tiny_fp32.detect([images["horses"]])[0]
    assert [size for _, size in recording.calls] == [3, 3]


def test_images_go_before_video_frames_which_run_in_slices(tiny_fp32, images):
    recording = RecordingDetector(tiny_fp32)
    batcher, gate, _ = gated_batcher(recording, max_batch=8, bulk_slice=2)
    options = tiny_fp32.options()
    order = ["horses", "person", "eagle", "dog", "horses"]
    video = batcher.submit_many([images[name] for name in order], [options] * 5, bulk=True)
    first = batcher.submit(images["dog"], options)  # queued after the video, runs before it
    arrivals = []

    def an_image_arrives_during_the_first_slice(calls: int) -> None:
        if calls == 2:
            arrivals.append(batcher.submit(images["eagle"], options))

    recording.on_call = an_image_arrives_during_the_first_slice
    gate.set()
    frames = video.result(60)
    # The image, then a slice of 2 frames, then the image that arrived meanwhile (not
    # the rest of the video), then the other slices; images and frames never share a pass.
    assert [size for _, size in recording.calls] == [1, 2, 1, 2, 1]
    assert first.result(60).batch_size == 1 and arrivals[0].result(60).batch_size == 1
    assert arrivals[0].result().detections == tiny_fp32.detect([images["eagle"]])[0]
    assert [r.batch_size for r in frames] == [2, 2, 2, 2, 1]
    for name, result in zip(order, frames, strict=True):
        assert result.detections == tiny_fp32.detect([images[name]])[0]


def test_a_stream_of_images_that_never_lets_up_does_not_starve_a_video(tiny_fp32, images):
    # Image requests keep arriving, one more with every forward pass, so that there is
    # always one waiting: after 2 image batches in a row, the video gets a slice.
    recording = RecordingDetector(tiny_fp32)
    batcher, gate, _ = gated_batcher(recording, max_batch=1, bulk_slice=2, bulk_every=2)
    options = tiny_fp32.options()
    video = batcher.submit_many([images["horses"]] * 4, [options] * 4, bulk=True)
    stream = [batcher.submit(images["dog"], options) for _ in range(3)]

    def another_image(calls: int) -> None:
        if calls < 12:
            stream.append(batcher.submit(images["dog"], options))

    recording.on_call = another_image
    gate.set()
    frames = video.result(60)
    for pending in list(stream):
        pending.result(60)
    sizes = [size for _, size in recording.calls]
    # 1 = an image batch, 2 = a video slice: the video's two slices come after 2 image
    # batches each, although images were waiting all the while.
    assert sizes[:6] == [1, 1, 2, 1, 1, 2], sizes
    assert [r.detections for r in frames] == [tiny_fp32.detect([images["horses"]])[0]] * 4
    assert all(p.result().detections == tiny_fp32.detect([images["dog"]])[0] for p in stream)


def test_without_a_slice_a_video_batch_runs_whole_and_a_failure_fails_it_alone(tiny_fp32,
                                                                                 images):
    recording = RecordingDetector(tiny_fp32)
    batcher, gate, _ = gated_batcher(recording, max_batch=8)
    options = tiny_fp32.options()
    broken = batcher.submit_many([images["dog"]] * 2, [options], bulk=True)
    video = batcher.submit_many([images["dog"]] * 3, [options] * 3, bulk=True)
    gate.set()
    with pytest.raises(ValueError, match="2 images but 1 option sets"):
        broken.result(60)
    assert [r.batch_size for r in video.result(60)] == [3, 3, 3]
    assert [size for _, size in recording.calls] == [2, 3]
    assert batcher.submit_many([], [], bulk=True).result(1) == []


def test_a_model_that_cannot_be_loaded_fails_every_request_and_is_tried_again(
        settings, tmp_path, images):
    from jobs import inference, runtime

    settings.WEIGHTS_DIR = tmp_path  # nothing fetched here
    try:
        batcher = inference.get_batcher("yolov3-spp")
        with pytest.raises(FileNotFoundError):
            batcher.detector(30)
        assert batcher.failed
        with pytest.raises(FileNotFoundError):  # after the failure, at once
            batcher.submit(images["dog"], None).result(5)
        assert inference.get_batcher("yolov3-spp") is not batcher  # a new attempt
    finally:
        runtime.current().batchers.pop("yolov3-spp", None)


def test_a_failing_request_fails_alone_and_the_thread_goes_on(tiny_fp32, images):
    recording = RecordingDetector(tiny_fp32)
    batcher, gate, _ = gated_batcher(recording, max_batch=4)
    options = tiny_fp32.options()
    broken = batcher.submit_many([images["dog"]], [])  # options missing: detect_each refuses
    fine = batcher.submit(images["eagle"], options)
    gate.set()
    with pytest.raises(ValueError, match="1 images but 0 option sets"):
        broken.result(60)
    # The batch failed; its requests ran again one by one, and only the broken one failed.
    assert fine.result(60).detections == tiny_fp32.detect([images["eagle"]])[0]
    assert [size for _, size in recording.calls] == [2, 1, 1]
    again = batcher.submit(images["eagle"], options)
    assert again.result(60).batch_size == 1


def test_closing_finishes_the_forward_pass_in_progress_and_fails_the_waiting(tiny_fp32,
                                                                              images):
    recording = RecordingDetector(tiny_fp32)
    batcher, gate, _ = gated_batcher(recording, max_batch=1)
    started, close_now = threading.Event(), threading.Event()

    def first_call(count):
        if count == 1:
            started.set()
            close_now.wait(30)  # close() is called while this forward pass is running

    recording.on_call = first_call
    options = tiny_fp32.options()
    running = batcher.submit(images["dog"], options)
    waiting = batcher.submit(images["eagle"], options)
    gate.set()
    assert started.wait(60)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    for _ in range(600):  # until close() has taken the waiting request off the queue
        if batcher._closing:
            break
        threading.Event().wait(0.05)
    close_now.set()
    closer.join(60)
    assert not closer.is_alive() and not batcher._thread.is_alive()
    assert running.result(60).detections == tiny_fp32.detect([images["dog"]])[0]
    with pytest.raises(RuntimeError, match="inference thread stopped"):
        waiting.result(60)
    with pytest.raises(RuntimeError, match="inference thread stopped"):
        batcher.submit(images["dog"], options).result(60)
    assert len(recording.calls) == 1


def test_video_slices_are_2_frames_on_a_cpu_unless_set(settings):
    from jobs.inference import video_slice_frames

    settings.VIDEO_SLICE_FRAMES = 0
    assert video_slice_frames("cpu") == 2
    settings.VIDEO_SLICE_FRAMES = 5
    assert video_slice_frames("cpu") == 5


def test_forward_passes_take_4_images_on_a_cpu_unless_set(settings, tiny_paths):
    from jobs.inference import detector_max_batch, get_detector

    settings.DETECTOR_MAX_BATCH = 0
    assert detector_max_batch("cpu") == 4
    assert get_detector(device="cpu", precision="fp32").max_batch == 4
    settings.DETECTOR_MAX_BATCH = 6
    assert detector_max_batch("cpu") == 6
    assert get_detector(device="cpu", precision="fp32").max_batch == 6


def test_passes_at_once_are_two_on_a_cpu_unless_set(settings):
    from jobs.inference import detector_streams

    settings.DETECTOR_STREAMS, settings.DETECTOR_THREADS = 0, 2
    assert detector_streams("cpu") == 2
    settings.DETECTOR_THREADS = 1
    assert detector_streams("cpu") == 1
    settings.DETECTOR_STREAMS = 3
    assert detector_streams("cpu") == 3


# --- several forward passes at once ------------------------------------------------------

class HeldPass:
    """A forward pass that ends when the test says so (``release``)."""

    def __init__(self, found, error=None):
        self.found, self.error = found, error
        self.released = threading.Event()

    def result(self):
        assert self.released.wait(30), "a pass was waited for but never released"
        if self.error is not None:
            raise self.error
        return self.found


class TwoAtOnceDetector(RecordingDetector):
    """A real detector's answers, with two passes under way at once whose ends the test
    controls; ``fail`` names the calls (1-based) whose pass raises."""

    parallel_passes = 2

    def __init__(self, detector, max_batch=4, fail=()):
        super().__init__(detector)
        self.max_batch = max_batch
        self.passes: list[HeldPass] = []
        self.fail = set(fail)
        self.changed = threading.Condition()

    def start_each(self, images, options):
        found = self.detect_each(images, options)
        error = RuntimeError("the pass failed") if len(self.calls) in self.fail else None
        with self.changed:
            self.passes.append(HeldPass(found, error))
            self.changed.notify_all()
        return self.passes[-1]

    def started(self, count):
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.passes) >= count, 30)
        return self.passes[count - 1]


def test_two_passes_run_at_once_and_answer_in_order(tiny_fp32, images):
    overlapping = TwoAtOnceDetector(tiny_fp32)
    batcher, gate, _ = gated_batcher(overlapping, max_batch=4)
    options = tiny_fp32.options()
    first = batcher.submit_many([images["dog"]] * 4, [options] * 4)
    second = batcher.submit_many([images["horses"]] * 4, [options] * 4)
    third = batcher.submit(images["person"], options)
    gate.set()
    overlapping.started(2)  # both under way, neither finished
    assert len(overlapping.passes) == 2 and not first.done() and not second.done()
    overlapping.passes[0].released.set()
    assert [r.batch_size for r in first.result(30)] == [4, 4, 4, 4]
    overlapping.started(3).released.set()  # the third starts once the first has ended
    overlapping.passes[1].released.set()
    assert second.result(30)[0].detections == tiny_fp32.detect([images["horses"]])[0]
    assert third.result(30).detections == tiny_fp32.detect([images["person"]])[0]
    assert [size for _, size in overlapping.calls] == [4, 4, 1]


def test_with_passes_at_once_images_still_go_before_video_slices(tiny_fp32, images):
    overlapping = TwoAtOnceDetector(tiny_fp32)
    batcher, gate, _ = gated_batcher(overlapping, max_batch=4, bulk_slice=2)
    options = tiny_fp32.options()
    order = ["horses", "person", "eagle", "dog", "horses"]
    video = batcher.submit_many([images[name] for name in order], [options] * 5, bulk=True)
    image = batcher.submit(images["dog"], options)
    gate.set()
    overlapping.started(2)  # the image, then the video's first slice beside it
    arriving = batcher.submit(images["eagle"], options)
    overlapping.passes[0].released.set()
    overlapping.started(3).released.set()  # the image that arrived, before the next slice
    for count in (2, 4, 5):
        overlapping.started(count).released.set()
    frames = video.result(30)
    assert [size for _, size in overlapping.calls] == [1, 2, 1, 2, 1]
    assert image.result(30).batch_size == 1 and arriving.result(30).batch_size == 1
    assert [r.batch_size for r in frames] == [2, 2, 2, 2, 1]
    for name, result in zip(order, frames, strict=True):
        assert result.detections == tiny_fp32.detect([images[name]])[0]


def test_with_passes_at_once_a_failed_pass_fails_only_its_own(tiny_fp32, images):
    overlapping = TwoAtOnceDetector(tiny_fp32, fail={1, 3})
    batcher, gate, _ = gated_batcher(overlapping, max_batch=4, bulk_slice=2)
    options = tiny_fp32.options()
    lone = batcher.submit(images["dog"], options)  # call 1: its pass fails
    video = batcher.submit_many([images["horses"]] * 4, [options] * 4, bulk=True)  # 2, 3
    gate.set()
    for count in (1, 2, 3):
        overlapping.started(count).released.set()
    with pytest.raises(RuntimeError, match="the pass failed"):
        lone.result(30)
    with pytest.raises(RuntimeError, match="the pass failed"):  # its second slice failed
        video.result(30)
    after = batcher.submit(images["eagle"], options)
    overlapping.started(4).released.set()
    assert after.result(30).detections == tiny_fp32.detect([images["eagle"]])[0]


def test_openvino_with_two_streams_gives_the_same_answers_through_the_batcher(
        tiny_paths, export_dir, tiny_openvino, images):
    from engine.detector import Detector
    from tests.conftest import require_runtime

    require_runtime("openvino")

    def load():
        return Detector.from_files(tiny_paths.cfg, tiny_paths.weights, tiny_paths.names,
                                   device="cpu", precision="fp32", runtime="openvino",
                                   cache_dir=export_dir, streams=2, max_batch=2)

    batcher = DynamicBatcher(load, max_batch=2, max_wait=0.0, bulk_slice=2)
    try:
        assert batcher.detector(120).parallel_passes == 2
        options = tiny_openvino.options()
        names = ["dog", "horses", "person", "eagle"] * 2
        video = batcher.submit_many([images[name] for name in names], [options] * 8, bulk=True)
        singles = [batcher.submit(images[name], options) for name in names]
        expected = [tiny_openvino.detect([images[name]])[0] for name in names]
        assert [r.detections for r in video.result(120)] == expected
        assert [s.result(120).detections for s in singles] == expected
    finally:
        batcher.close()
