"""Writes common to every kind of job: create, fail, cancel, announce, delete, retention.

Submitting work is per kind (``images.services``, ``videos.services``), and so is running
it (``images.runner``, ``videos.runner``); both use these.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import ApiError
from jobs import dispatch, notify
from jobs.models import Detection, Job, Track, Video, Webhook, webhook_of
from jobs.thumbnails import thumbnail_name

logger = logging.getLogger(__name__)


def ms_between(start, end) -> float:
    return (end - start).total_seconds() * 1000


# What a job keeps of its input, copied to a re-run of it: on the job, and a video's.
MEDIA_FIELDS = ("original_filename", "content_type", "file_size", "width", "height")
VIDEO_FACTS = ("fps", "frame_count", "duration_ms", "codec")


@transaction.atomic
def job_create(*, kind: str, owner, params: dict, input_file: str, model_name: str = "",
               model_version: int | None = None, job_id: uuid.UUID | None = None,
               video: dict | None = None, callback_url: str = "", base_url: str = "",
               **fields) -> Job:
    """Create a queued job: the one way every path (API, compatibility layers, re-runs)
    does, so that each has what the workers and the watchdog need — a lease, by which a
    job whose message is lost is sent again; the model (``model_name``, by default
    DETECTOR_MODEL, and ``model_version``, the version the request resolved to); the
    input. ``fields``: the input's facts (MEDIA_FIELDS), ``idempotency_key``,
    ``parent``; ``video``: a video job's facts (VIDEO_FACTS) and ``frames_total``;
    ``callback_url``: where its webhook goes, with ``base_url`` for the absolute URLs in
    its body."""
    if (kind == Job.Kind.VIDEO) != (video is not None):
        raise ValueError("a video job needs its video's facts, and only a video job has them")
    job = Job.objects.create(
        id=job_id or uuid.uuid4(), kind=kind, owner=owner, params=params,
        model_name=model_name or settings.DETECTOR_MODEL, model_version=model_version,
        input_file=input_file,
        lease_expires=timezone.now() + timedelta(seconds=settings.QUEUE_STALE_SECONDS),
        **fields)
    if video is not None:
        Video.objects.create(job=job, **video)
    if callback_url:
        Webhook.objects.create(job=job, url=callback_url, base_url=base_url[:500])
    return job


def annotated_name(job: Job) -> str:
    """The stored name of a video job's annotated copy; "" if it has none."""
    if job.kind != Job.Kind.VIDEO:
        return ""
    return job.video.annotated_file.name or ""


def queue_unavailable() -> ApiError:
    """The client's answer when work cannot be sent: try again shortly."""
    return ApiError("queue_unavailable", "the job queue cannot be reached; try again shortly",
                    status_code=503, details={"retry_after_s": 5})


def job_fail(*, job: Job, code: str, message: str) -> None:
    """Fail a job that has not finished; its waiters and its webhook are told."""
    finished = timezone.now()
    failed = Job.objects.filter(pk=job.pk).exclude(status__in=Job.FINISHED).update(
        status=Job.Status.FAILED, error_code=code, error_message=message[:2000],
        finished_at=finished, total_ms=ms_between(job.created_at, finished))
    now_failed = Job.objects.filter(pk=job.pk).first() if failed else None
    if now_failed is not None:
        announce(now_failed)
    else:
        notify.job_finished(job.pk)


def announce(job: Job) -> None:
    """A job finished: wake whoever waits for it, and send its webhook."""
    notify.job_finished(job.pk)
    if webhook_of(job) is not None:
        dispatch.send_on_commit(dispatch.SEND_WEBHOOK, [(str(job.pk),)])


def job_cancel(*, job: Job) -> Job:
    """Stop a queued or running job; its workers notice at their next batch."""
    cancelled = Job.objects.filter(
        pk=job.pk, status__in=(Job.Status.QUEUED, Job.Status.RUNNING)).update(
        status=Job.Status.CANCELLED, finished_at=timezone.now())
    job.refresh_from_db()
    if cancelled:
        announce(job)  # its webhook too: job.cancelled
    else:
        notify.job_finished(job.pk)
    return job


def job_delete(*, job: Job) -> None:
    """Remove a job, its detections and its files (a running job's worker stops)."""
    Job.objects.filter(pk=job.pk).exclude(status__in=Job.FINISHED).update(
        status=Job.Status.CANCELLED)
    delete_input(job)
    _delete_file(annotated_name(job))
    _delete_file(thumbnail_name(job))
    job.delete()


def delete_input(job: Job) -> None:
    _delete_file(job.input_file.name if job.input_file else "")


def _delete_file(name: str) -> None:
    if name:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not delete %s", name, exc_info=True)


def retention_apply(*, now=None) -> dict:
    """Delete what is past its time-to-live (see RETENTION_* settings); return counts."""
    now = now or timezone.now()
    counts = {"media_deleted": 0, "jobs_deleted": 0}
    if settings.RETENTION_JOBS_DAYS:
        cutoff = now - timedelta(days=settings.RETENTION_JOBS_DAYS)
        for job in Job.objects.filter(status__in=Job.FINISHED, finished_at__lt=cutoff).iterator():
            job_delete(job=job)
            counts["jobs_deleted"] += 1
    if settings.RETENTION_MEDIA_DAYS:
        cutoff = now - timedelta(days=settings.RETENTION_MEDIA_DAYS)
        no_annotated = Q(video__isnull=True) | Q(video__annotated_file="")
        expired = Job.objects.filter(status__in=Job.FINISHED, finished_at__lt=cutoff).exclude(
            Q(input_file="") & no_annotated).select_related("video")
        for job in expired.iterator():
            delete_input(job)
            _delete_file(annotated_name(job))
            _delete_file(thumbnail_name(job))
            with transaction.atomic():
                Job.objects.filter(pk=job.pk).update(input_file="")
                Video.objects.filter(job=job).update(annotated_file="")
            counts["media_deleted"] += 1
    return counts


def _box(row) -> list[float]:
    return [round(row[4], 2), round(row[5], 2), round(row[6], 2), round(row[7], 2)]


@transaction.atomic
def tracks_refresh(*, job: Job, track_ids: list[int] | None = None) -> int:
    """Rebuild the job's ``Track`` rows (those of ``track_ids``; None: all) from the
    detections that carry their ids, after tracking or a review that moved boxes between
    tracks; returns the tracks written. A track left with no box has no row."""
    rows = Detection.objects.filter(job=job, track_id__isnull=False)
    stale = Track.objects.filter(job=job)
    if track_ids is not None:
        rows = rows.filter(track_id__in=track_ids)
        stale = stale.filter(track_id__in=track_ids)
    stale.delete()
    tracks: list[Track] = []
    current: Track | None = None
    frames: set[int] = set()
    total = 0.0
    count = 0
    for row in rows.order_by("track_id", "frame_index", "-confidence", "id").values_list(
            "track_id", "frame_index", "timestamp_ms", "confidence", "x1", "y1", "x2", "y2",
            "class_id", "label").iterator(chunk_size=5000):
        if current is None or row[0] != current.track_id:
            if current is not None:
                current.frames, current.mean_confidence = len(frames), total / count
            current = Track(job=job, track_id=row[0] or 0, class_id=row[8], label=row[9],
                            first_frame=row[1], first_ms=row[2], first_box=_box(row),
                            max_confidence=row[3], last_frame=row[1], last_ms=row[2],
                            last_box=_box(row), duration_ms=0, frames=0, mean_confidence=0)
            tracks.append(current)
            frames, total, count = set(), 0.0, 0
        if row[1] not in frames and row[1] > current.last_frame:
            current.last_frame, current.last_ms, current.last_box = row[1], row[2], _box(row)
        current.duration_ms = current.last_ms - current.first_ms
        current.max_confidence = max(current.max_confidence, row[3])
        frames.add(row[1])
        total += row[3]
        count += 1
    if current is not None:
        current.frames, current.mean_confidence = len(frames), total / count
    Track.objects.bulk_create(tracks, batch_size=1000)
    return len(tracks)
