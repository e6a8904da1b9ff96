"""Writes for video jobs: submit, queue in parts, annotate, requeue (the watchdog's).
Running a part, in a worker, is ``videos.runner``.

A video job is split into parts — ranges of frames — that any number of workers process
in parallel. A part is processed under a lease, which the heartbeat of the worker holding
it renews for as long as the task runs (``jobs.leases``). A worker that dies stops
renewing; the watchdog (``jobs.runtime``, with :func:`requeue_stalled`) gives the part to
a new task, which resumes from the part's last committed batch — so no frame is lost or
stored twice. Each batch commits its detections with the progress (``next_frame``,
``progressed_at``); a live task that commits none for STALL_SECONDS is stalled, and its
part goes to a new task the same way, counted as an attempt, and failed "stalled" (not
"the worker died") once the attempts are spent. The last part to finish stays running,
under its lease, while its task finishes the job (tracks, the annotated copy): a worker
that dies then leaves the job to another task, not running for ever. Parts are cut at
multiples of the batch size (in processed frames), so every batch is the one a single
worker would have run: the merged result equals a single-worker run, frame for frame.
The task that finishes the last part finishes the job (decided under a row lock, not by
a chord callback, so that a part taken over after its worker died still counts).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import ApiError
from core.storage import local_or_url
from jobs import catalog, dispatch
from jobs.catalog import Choice
from jobs.frames import FrameSelection
from jobs.leases import Lease
from jobs.models import Detection, Job, Video
from jobs.selectors import selection_for
from jobs.services import annotated_name, job_create, queue_unavailable
from jobs.uploads import safe_original_name, stored_name
from videos.annotate import render_annotated
from videos.models import VideoPart
from videos.probe import VideoLimits, probe_video

# A running part's lease: the heartbeat of the worker holding it renews it.
PART_LEASE = Lease("video_part", VideoPart, seconds=lambda: settings.VIDEO_LEASE_SECONDS,
                   owner_field="lease_owner",
                   live=lambda: Q(status=VideoPart.Status.RUNNING,
                                  job__status__in=(Job.Status.QUEUED, Job.Status.RUNNING)))


def video_limits() -> VideoLimits:
    return VideoLimits(max_pixels=settings.MAX_VIDEO_PIXELS, max_frames=settings.MAX_VIDEO_FRAMES,
                       max_duration_s=settings.MAX_VIDEO_DURATION_SECONDS,
                       max_fps=settings.MAX_VIDEO_FPS)


def plan_parts(frame_count: int, selection: FrameSelection, *, batch_size: int,
               max_parts: int, min_part_frames: int) -> list[tuple[int, int | None]]:
    """Source-frame ranges [start, end) for the parts; the last one runs to the end.

    Each part but the last holds a multiple of ``batch_size`` processed frames, so that
    the batches are the same as in a single pass.
    """
    selected = selection.count(frame_count)
    parts = max(1, min(max_parts, selected // max(1, min_part_frames)))
    if parts == 1:
        return [(0, None)]
    per_part = math.ceil(selected / parts / batch_size) * batch_size
    bounds, seen = [0], 0
    for index in range(frame_count):
        if index in selection:
            if seen and seen % per_part == 0 and len(bounds) < parts:
                bounds.append(index)
            seen += 1
    return [(start, end) for start, end in zip(bounds, [*bounds[1:], None], strict=True)]


@contextlib.contextmanager
def _upload_on_disk(upload: UploadedFile):
    """The upload as a file path (large uploads already are; small ones are written out)."""
    if isinstance(upload, TemporaryUploadedFile):
        yield upload.temporary_file_path()
        return
    with tempfile.NamedTemporaryFile(suffix=".upload") as tmp:
        upload.seek(0)
        for chunk in upload.chunks():
            tmp.write(chunk)
        tmp.flush()
        upload.seek(0)
        yield tmp.name


def _deadline(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def video_job_submit(*, owner, upload: UploadedFile, params: dict, callback_url: str = "",
                     idempotency_key: str = "", base_url: str = "",
                     model: Choice | None = None) -> tuple[Job, bool]:
    """Check and store a video and queue its parts; returns (job, created).

    With an idempotency key already used by this owner, the earlier job is returned and
    nothing new is stored. ``model``: the version to run (default: DETECTOR_MODEL's
    default version).
    """
    if idempotency_key:
        earlier = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if earlier is not None:
            return earlier, False
    _check_active_jobs(owner)  # cheap, before the upload is examined and stored
    model = model or catalog.resolve(None)
    if (upload.size or 0) > settings.MAX_VIDEO_UPLOAD_BYTES:
        raise ApiError("too_large", f"the file is {upload.size} bytes; the limit is "
                       f"{settings.MAX_VIDEO_UPLOAD_BYTES}", status_code=413,
                       details={"max_bytes": settings.MAX_VIDEO_UPLOAD_BYTES})
    with _upload_on_disk(upload) as path:
        info = probe_video(path, video_limits())
    selection = FrameSelection(fps=info.fps, stride=params.get("frame_stride") or 1,
                               sample_fps=params.get("sample_fps"))
    name = default_storage.save(stored_name("videos", info.extension), upload)
    try:
        with transaction.atomic():
            _check_active_jobs(owner, lock=True)  # again, serialised per owner: no race
            job = job_create(
                kind=Job.Kind.VIDEO, owner=owner, params=params, input_file=name,
                model_name=model.name, model_version=model.version,
                original_filename=safe_original_name(upload.name),
                content_type=info.content_type, file_size=upload.size, width=info.width,
                height=info.height, idempotency_key=idempotency_key,
                video={"fps": info.fps, "frame_count": info.frame_count,
                       "duration_ms": info.duration_ms, "codec": info.codec,
                       "frames_total": selection.count(info.frame_count)},
                callback_url=callback_url, base_url=base_url)
            queue_parts(job, selection)
    except IntegrityError:
        default_storage.delete(name)
        earlier = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if earlier is None:
            raise
        return earlier, False  # the same key, sent twice at once
    except Exception:
        default_storage.delete(name)
        raise
    return job, True


def _check_active_jobs(owner, *, lock: bool = False) -> None:
    """At most MAX_ACTIVE_VIDEO_JOBS_PER_USER queued or running videos per owner (429)."""
    limit = settings.MAX_ACTIVE_VIDEO_JOBS_PER_USER
    if not limit or owner is None:
        return
    if lock:
        type(owner).objects.select_for_update().filter(pk=owner.pk).first()
    active = Job.objects.filter(owner=owner, kind=Job.Kind.VIDEO,
                                status__in=(Job.Status.QUEUED, Job.Status.RUNNING)).count()
    if active >= limit:
        raise ApiError("too_many_active_jobs", f"you already have {active} video jobs queued or "
                       f"running (the limit is {limit}); wait for one to finish",
                       status_code=429, details={"limit": limit, "retry_after_s": 30})


def queue_parts(job: Job, selection: FrameSelection) -> None:
    """Create the job's parts and send them to the workers once the transaction commits."""
    ranges = plan_parts(job.video.frame_count or 0, selection, batch_size=settings.VIDEO_BATCH_SIZE,
                        max_parts=settings.VIDEO_MAX_PARTS,
                        min_part_frames=settings.VIDEO_PART_MIN_FRAMES)
    deadline = _deadline(settings.QUEUE_STALE_SECONDS)
    VideoPart.objects.bulk_create([
        VideoPart(job=job, index=index, start_frame=start, end_frame=end, next_frame=start,
                  lease_expires=deadline) for index, (start, end) in enumerate(ranges)])

    def leave_to_watchdog(exc: Exception) -> None:
        # Accepted all the same: the watchdog sends the parts once the broker is back.
        VideoPart.objects.filter(job=job).update(lease_expires=timezone.now())

    dispatch.send_on_commit(dispatch.PROCESS_VIDEO_PART,
                            [(str(job.pk), index) for index in range(len(ranges))],
                            on_error=leave_to_watchdog)


def annotate_job(*, job: Job) -> str:
    """Render the video with its boxes drawn; store it; return the stored name."""
    detections = Detection.objects.filter(job=job).order_by("frame_index").only(
        "frame_index", "class_id", "label", "confidence", "x1", "y1", "x2", "y2", "track_id")
    with tempfile.TemporaryDirectory() as tmp, local_or_url(job.input_file.name) as source:
        output = os.path.join(tmp, "annotated.mp4")
        render_annotated(source, output, detections.iterator(chunk_size=5000),
                         selection=selection_for(job))
        with open(output, "rb") as stream:
            name = default_storage.save(stored_name("annotated", "mp4"), stream)
    old = annotated_name(job)
    Video.objects.filter(job=job).update(annotated_file=name)
    if old:
        default_storage.delete(old)
    return name


def annotation_request(*, job: Job) -> bool:
    """Ask for the annotated video once (again only if an earlier request got nowhere);
    503 queue_unavailable if the broker cannot be reached (asking again will retry)."""
    now = timezone.now()
    retry_before = now - timedelta(seconds=settings.ANNOTATION_RETRY_SECONDS)
    asked = Video.objects.filter(Q(annotation_requested_at__isnull=True)
                                 | Q(annotation_requested_at__lt=retry_before),
                                 job=job).update(annotation_requested_at=now)
    if asked and not dispatch.send(dispatch.ANNOTATE_VIDEO, str(job.pk)):
        Video.objects.filter(job=job).update(annotation_requested_at=None)
        raise queue_unavailable()
    return bool(asked)


def requeue_stalled(*, now=None) -> list[str]:
    """For the watchdog: parts to send to a new task, each said with why —

    - its lease lapsed: its worker stopped beating (died, hung, lost the database), or
      its message was lost before any worker started it;
    - it stalled: its task is alive but committed no batch for STALL_SECONDS.

    The lease is pushed forward as the part is requeued, so that one part is requeued
    once (by one watchdog), not on every tick. A stalled task loses its part: it stops
    at its next batch (LeaseLost).
    """
    now = now or timezone.now()
    active = Q(job__status__in=(Job.Status.QUEUED, Job.Status.RUNNING))
    lapsed = VideoPart.objects.filter(
        active, status__in=(VideoPart.Status.QUEUED, VideoPart.Status.RUNNING),
        lease_expires__lt=now)
    stalled = VideoPart.objects.filter(
        active, status=VideoPart.Status.RUNNING, lease_expires__gte=now,
        frames_read__isnull=True,  # else it is finishing the job: no batches to commit
        progressed_at__lt=now - timedelta(seconds=settings.STALL_SECONDS)).exclude(
        lease_owner="")
    requeued: list[str] = []
    for because, parts in ((VideoPart.Requeued.WORKER_LOST, lapsed),
                           (VideoPart.Requeued.STALLED, stalled)):
        for pk, job_id, index, expires, started in parts.values_list(
                "pk", "job_id", "index", "lease_expires", "attempts"):
            taken = VideoPart.objects.filter(pk=pk, lease_expires=expires).update(
                lease_owner="", requeued_because=because if started else "",
                lease_expires=now + timedelta(seconds=settings.QUEUE_STALE_SECONDS))
            if not taken:
                continue
            if not dispatch.send(dispatch.PROCESS_VIDEO_PART, str(job_id), index):
                VideoPart.objects.filter(pk=pk).update(lease_expires=now)  # next tick, again
                return requeued
            if because == VideoPart.Requeued.STALLED:
                why = f"stalled (no batch committed for {settings.STALL_SECONDS:g} s)"
            else:
                why = "lost its worker" if started else "was never started"
            requeued.append(f"video job {job_id} part {index} {why}")
    return requeued
