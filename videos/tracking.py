"""Tracking a finished video job's detections (in a worker, as the job finishes): which
boxes are one object through the video (``engine.tracking``).

Tracking runs once over the whole video's stored detections in frame order, after every
part is done: the parts a video was processed in never break a track, and the result is
the same however many parts there were, or whichever worker ran them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from itertools import groupby

from django.conf import settings
from django.db import transaction

from engine.tracking import TrackBox, TrackerConfig, processed_fps, track
from jobs.models import Detection, Job, Video
from jobs.selectors import selection_for, track_parameters
from jobs.services import tracks_refresh

logger = logging.getLogger(__name__)


def tracker_config(params: dict) -> TrackerConfig:
    """The tracker's parameters: the job's, else the settings'."""
    buffer_ms, activation = track_parameters(params)
    return TrackerConfig(
        buffer_ms=buffer_ms, activation_threshold=activation,
        high_threshold=settings.TRACK_HIGH_THRESHOLD, match_iou=settings.TRACK_MATCH_IOU,
        nested_overlap=settings.TRACK_NESTED_OVERLAP, min_track_frames=settings.TRACK_MIN_FRAMES)


def _frames(job: Job) -> Iterator[tuple[int, list[TrackBox]]]:
    """Every processed frame of the job in order, with its boxes (none: an empty list)."""
    selection = selection_for(job)
    rows = (Detection.objects.filter(job=job).order_by("frame_index", "id")
            .values_list("frame_index", "id", "class_id", "confidence", "x1", "y1", "x2", "y2")
            .iterator(chunk_size=10_000))
    grouped = groupby(rows, key=lambda row: row[0])
    upcoming = next(grouped, None)
    last = max(job.video.frame_count or 0, job.video.frames_done)
    index = 0
    while index < last or upcoming is not None:
        if upcoming is not None and upcoming[0] == index:
            yield index, [TrackBox(*row[1:]) for row in upcoming[1]]
            upcoming = next(grouped, None)
        elif upcoming is not None and upcoming[0] < index:  # not a selected frame: skip
            upcoming = next(grouped, None)
            continue
        elif index in selection:
            yield index, []
        index += 1


def job_track(*, job: Job) -> int:
    """Track the objects of a video job through its detections; store each box's track id
    and the job's tracks; returns how many tracks. Running it again gives the same."""
    started = time.perf_counter()
    ids = track(_frames(job), fps=processed_fps(selection_for(job).interval_ms),
                config=tracker_config(job.params))
    members: dict[int, list[int]] = {}
    for pk, track_id in ids.items():
        members.setdefault(track_id, []).append(pk)
    with transaction.atomic():
        Detection.objects.filter(job=job, track_id__isnull=False).update(track_id=None)
        for track_id, pks in members.items():  # one UPDATE a track (a few thousand ids each)
            for start in range(0, len(pks), 5000):
                Detection.objects.filter(pk__in=pks[start:start + 5000]).update(
                    track_id=track_id)
        count = tracks_refresh(job=job)
        Video.objects.filter(job=job).update(
            tracks=count, tracking_ms=1000 * (time.perf_counter() - started))
    logger.info("video job %s: %d tracks from %d boxes", job.pk, count, len(ids))
    return count
