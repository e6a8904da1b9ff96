"""Writes for video jobs: submit, run in parts (resumable, leased), cancel, annotate.

A video job is split into parts — ranges of frames — that any number of workers process
in parallel. A part is processed under a lease, which the heartbeat of the worker holding
it renews for as long as the task runs (``detection.leases``). A worker that dies stops
renewing; the watchdog (see ``detection.worker``) gives the part to a new task, which
resumes from the part's last committed batch — so no frame is lost or stored twice. Each
batch commits its detections with the progress (``next_frame``, ``progressed_at``); a
live task that commits none for STALL_SECONDS is stalled, and its part goes to a new task
the same way, counted as an attempt, and failed "stalled" (not "the worker died") once
the attempts are spent. Parts are cut at multiples of the batch size (in
processed frames), so every batch is the one a single worker would have run: the merged
result equals a single-worker run, frame for frame. The task that finishes the last
part finishes the job (decided under a row lock, not by a chord callback, so that a part
taken over after its worker died still counts).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import tempfile
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from detection import leases, notify
from detection.inference import get_batcher, weights_sha256
from detection.models import Detection, Job
from detection.services import BROKER_ERRORS, job_create, job_fail
from detection.uploads import safe_original_name, stored_name
from pmr.errors import ApiError
from pmr.storage import local_or_url
from videos.models import VideoPart
from videos.pipeline import FrameReader, FrameSelection
from videos.probe import VideoLimits, probe_video

logger = logging.getLogger(__name__)

DETECTION_PARAMS = ("min_confidence", "iou_threshold", "classes", "max_detections")
_EXACT_FRAME_COUNTS = ("video/mp4", "video/quicktime", "video/x-m4v", "video/3gpp")


class LeaseLost(Exception):
    """The part was taken over, or its job cancelled, failed or deleted."""


# Video parts this process is running: the heartbeat renews their leases.
part_leases = leases.register("video_part", leases.Leases(
    VideoPart, seconds=lambda: settings.VIDEO_LEASE_SECONDS, owner_field="lease_owner",
    live=lambda: Q(status=VideoPart.Status.RUNNING,
                   job__status__in=(Job.Status.QUEUED, Job.Status.RUNNING))))


def video_limits() -> VideoLimits:
    return VideoLimits(max_pixels=settings.MAX_VIDEO_PIXELS, max_frames=settings.MAX_VIDEO_FRAMES,
                       max_duration_s=settings.MAX_VIDEO_DURATION_SECONDS,
                       max_fps=settings.MAX_VIDEO_FPS)


def selection_for(job: Job) -> FrameSelection:
    return FrameSelection(fps=job.fps, stride=job.params.get("frame_stride") or 1,
                          sample_fps=job.params.get("sample_fps"))


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
                     idempotency_key: str = "", base_url: str = "") -> tuple[Job, bool]:
    """Check and store a video and queue its parts; returns (job, created).

    With an idempotency key already used by this owner, the earlier job is returned and
    nothing new is stored.
    """
    if idempotency_key:
        earlier = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if earlier is not None:
            return earlier, False
    _check_active_jobs(owner)  # cheap, before the upload is examined and stored
    if upload.size > settings.MAX_VIDEO_UPLOAD_BYTES:
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
                original_filename=safe_original_name(upload.name),
                content_type=info.content_type, file_size=upload.size, width=info.width,
                height=info.height, fps=info.fps, frame_count=info.frame_count,
                duration_ms=info.duration_ms, codec=info.codec,
                frames_total=selection.count(info.frame_count),
                callback_url=callback_url, idempotency_key=idempotency_key,
                base_url=base_url[:500])
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
    from celery import group

    from videos.tasks import process_video_part

    ranges = plan_parts(job.frame_count or 0, selection, batch_size=settings.VIDEO_BATCH_SIZE,
                        max_parts=settings.VIDEO_MAX_PARTS,
                        min_part_frames=settings.VIDEO_PART_MIN_FRAMES)
    deadline = _deadline(settings.QUEUE_STALE_SECONDS)
    VideoPart.objects.bulk_create([
        VideoPart(job=job, index=index, start_frame=start, end_frame=end, next_frame=start,
                  lease_expires=deadline) for index, (start, end) in enumerate(ranges)])
    fan_out = group(process_video_part.s(str(job.pk), index) for index in range(len(ranges)))

    def send() -> None:
        try:
            fan_out.delay()
        except BROKER_ERRORS:
            # Accepted all the same: the watchdog sends the parts once the broker is back.
            logger.warning("video job %s: the broker is unreachable; parts left for the "
                           "watchdog", job.pk)
            VideoPart.objects.filter(job=job).update(lease_expires=timezone.now())

    transaction.on_commit(send)


def _claim(job_id: str, index: int, owner: str, worker: str) -> VideoPart | None:
    """Take the part if it is free (never started, or its holder stopped renewing)."""
    now = timezone.now()
    free = Q(lease_owner="") | Q(lease_expires__lt=now) | Q(lease_owner=owner)
    active = (Job.Status.QUEUED, Job.Status.RUNNING)
    taken = VideoPart.objects.filter(
        free, job_id=job_id, index=index, job__status__in=active,
        status__in=(VideoPart.Status.QUEUED, VideoPart.Status.RUNNING),
    ).update(status=VideoPart.Status.RUNNING, lease_owner=owner,
             lease_expires=now + timedelta(seconds=settings.VIDEO_LEASE_SECONDS),
             progressed_at=now, attempts=F("attempts") + 1, worker=worker)
    if not taken:
        return None
    Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(status=Job.Status.RUNNING,
                                                                  started_at=now)
    return VideoPart.objects.select_related("job").get(job_id=job_id, index=index)


# Video parts this process is running. A part holds a Celery thread for as long as it
# runs (minutes); past the limit, a part is deferred rather than run, so that the
# worker's other threads stay free for image requests. (More parts at once would not go
# faster: they share the process's one inference thread.)
_parts = {"running": 0, "auto": 0}
_parts_lock = threading.Lock()

# How soon a part deferred by a busy worker is offered to the workers again.
DEFER_SECONDS = 2.0


def parts_limit_set(*, threads: int, takes_images: bool) -> None:
    """At worker start: VIDEO_PARTS_PER_WORKER's automatic value, from the worker's
    threads — half of them where it also takes image requests, else all."""
    _parts["auto"] = max(1, threads // 2) if takes_images else threads


def parts_limit() -> int:
    """How many video parts this process runs at once."""
    return (settings.VIDEO_PARTS_PER_WORKER or _parts["auto"]
            or max(1, settings.CELERY_WORKER_CONCURRENCY // 2))


def _take_slot() -> bool:
    with _parts_lock:
        if _parts["running"] >= parts_limit():
            return False
        _parts["running"] += 1
        return True


def _free_slot() -> None:
    with _parts_lock:
        _parts["running"] -= 1


def _defer(job_id: str, index: int) -> bool:
    """Send a part that nobody holds to the queue again, a little later; False if it is
    not to be run (held by a live task, done, or its job finished or gone).

    Its lease is pushed back meanwhile: the message is alive, the watchdog need not send
    another (it still does if the message is lost, once the lease lapses).
    """
    from videos.tasks import process_video_part

    now = timezone.now()
    kept = VideoPart.objects.filter(
        job_id=job_id, index=index, lease_owner="",
        status__in=(VideoPart.Status.QUEUED, VideoPart.Status.RUNNING),
        job__status__in=(Job.Status.QUEUED, Job.Status.RUNNING),
    ).update(lease_expires=now + timedelta(seconds=settings.QUEUE_STALE_SECONDS))
    if kept:
        try:
            process_video_part.apply_async((job_id, index), countdown=DEFER_SECONDS)
        except BROKER_ERRORS:
            VideoPart.objects.filter(job_id=job_id, index=index,
                                     lease_owner="").update(lease_expires=now)  # watchdog
    return bool(kept)


def video_part_run(*, job_id: str, index: int, worker: str | None = None) -> None:
    """Process (or resume) one part of a video job, in a worker; defer it if this
    process already runs as many parts as it may (``parts_limit``)."""
    if not _take_slot():
        if _defer(job_id, index):
            logger.info("video job %s part %d: deferred (%d parts running here)", job_id,
                        index, parts_limit())
        return
    try:
        _run_part(job_id, index, worker or socket.gethostname())
    finally:
        _free_slot()


def _run_part(job_id: str, index: int, worker: str) -> None:
    owner = f"{worker}:{os.getpid()}:{threading.get_ident()}"
    part = _claim(job_id, index, owner, worker)
    if part is None:
        return  # finished, cancelled, deleted, or another worker holds it
    job = part.job
    if part.attempts > settings.JOB_MAX_ATTEMPTS:
        tried = part.attempts - 1
        if part.requeued_because == VideoPart.Requeued.STALLED:
            _fail(job, code="stalled", message=f"processing frames {part.start_frame}.. of "
                  f"this video made no progress for {settings.STALL_SECONDS:g} s, {tried} "
                  "times (its worker was alive)")
        else:
            _fail(job, code="worker_lost", message=f"the worker died {tried} times "
                  f"processing frames {part.start_frame}.. of this video")
        return
    try:
        with part_leases.hold(part.pk, owner):
            _process_part(job, part, owner)
    except LeaseLost:
        logger.info("video job %s part %d: stopped (cancelled, failed, deleted or taken "
                    "over)", job_id, index)


def _process_part(job: Job, part: VideoPart, owner: str) -> None:
    batcher = get_batcher(job.model_name)
    try:
        detector = batcher.detector()
    except FileNotFoundError as exc:
        _fail(job, code="model_unavailable", message=str(exc))
        return
    options = detector.options(**{k: job.params.get(k) for k in DETECTION_PARAMS
                                  if job.params.get(k) is not None})
    # A batch commits with the progress that covers it, so nothing of this part past
    # next_frame is stored — but an attempt cut short between the two would leave some.
    upto = Q(frame_index__lt=part.end_frame) if part.end_frame is not None else Q()
    Detection.objects.filter(upto, job=job, frame_index__gte=part.next_frame).delete()
    logger.info("video job %s part %d: attempt %d, from frame %d", job.pk, part.index,
                part.attempts, part.next_frame)
    batch_size = settings.VIDEO_BATCH_SIZE
    with local_or_url(job.input_file.name) as source, FrameReader(
            source, selection_for(job), start=part.next_frame, end=part.end_frame,
            batch_size=batch_size, queue_frames=2 * batch_size) as reader:
        for batch in reader.batches():
            started = time.perf_counter()
            results = batcher.submit_many([f.image for f in batch], [options] * len(batch),
                                          bulk=True).result()
            found = [result.detections for result in results]
            rows = [Detection(job=job, frame_index=f.index, timestamp_ms=f.timestamp_ms,
                              class_id=d.class_id, label=d.label, confidence=d.confidence,
                              x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2)
                    for f, per_frame in zip(batch, found, strict=True) for d in per_frame]
            elapsed_ms = 1000 * (time.perf_counter() - started)
            with transaction.atomic():
                renewed = VideoPart.objects.filter(
                    pk=part.pk, lease_owner=owner, job__status=Job.Status.RUNNING,
                ).update(next_frame=batch[-1].index + 1, frames_done=F("frames_done") + len(batch),
                         progressed_at=timezone.now())
                if not renewed:
                    raise LeaseLost
                Job.objects.filter(pk=job.pk).update(
                    frames_done=F("frames_done") + len(batch),
                    processing_ms=F("processing_ms") + elapsed_ms)
                Detection.objects.bulk_create(rows, batch_size=2000)
        end = reader.end
    _part_done(job, part, owner, end)


def _part_done(job: Job, part: VideoPart, owner: str, end) -> None:
    expected = part.end_frame if part.end_frame is not None else (job.frame_count or 0)
    tolerance = 0 if (part.end_frame is not None or job.content_type in _EXACT_FRAME_COUNTS) \
        else max(2, expected // 50)  # other containers only estimate their frame count
    if end.error or end.frames_read < expected - tolerance:
        stopped_ms = round(end.frames_read * 1000 / job.fps) if job.fps else 0
        job.refresh_from_db(fields=["frames_done"])
        _fail(job, code="decode_failed", message=(
            f"decoding stopped at frame {end.frames_read} ({stopped_ms} ms) of the "
            f"{job.frame_count} the video claims" + (f": {end.error}" if end.error else "")
            + f"; the detections of the {job.frames_done} frames processed are kept"))
        return
    with transaction.atomic():
        finished = VideoPart.objects.filter(pk=part.pk, lease_owner=owner).update(
            status=VideoPart.Status.DONE, lease_owner="", frames_read=end.frames_read)
        if not finished:
            raise LeaseLost
        # Under the job's row lock, exactly one finishing part sees that none is left.
        locked = Job.objects.select_for_update().filter(pk=job.pk,
                                                        status=Job.Status.RUNNING).first()
        last = locked is not None and not VideoPart.objects.filter(job=job).exclude(
            status=VideoPart.Status.DONE).exists()
    if last:
        _finish_job(job)


def _finish_job(job: Job) -> None:
    if job.params.get("annotate"):
        try:
            annotate_job(job=job)
        except Exception:  # the detections stand; GET .../annotated can render it again
            logger.exception("video job %s: the annotated video could not be made", job.pk)
    finished = timezone.now()
    updated = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
        status=Job.Status.SUCCEEDED, finished_at=finished, frames_total=F("frames_done"),
        total_ms=(finished - job.created_at).total_seconds() * 1000,
        model_sha256=weights_sha256(job.model_name))
    if updated:
        _announce(job)


def _fail(job: Job, *, code: str, message: str) -> None:
    job_fail(job=job, code=code, message=message)  # the other parts stop at their next batch
    VideoPart.objects.filter(job=job).exclude(status=VideoPart.Status.DONE).update(
        lease_owner="")
    _announce(job)


def _announce(job: Job) -> None:
    notify.job_finished(job.pk)
    if job.callback_url:
        from videos.tasks import send_webhook

        send_webhook.delay(str(job.pk))


def job_cancel(*, job: Job) -> Job:
    """Stop a queued or running job; its workers notice at their next batch."""
    cancelled = Job.objects.filter(
        pk=job.pk, status__in=(Job.Status.QUEUED, Job.Status.RUNNING)).update(
        status=Job.Status.CANCELLED, finished_at=timezone.now())
    job.refresh_from_db()
    if cancelled:
        _announce(job)  # its webhook too: job.cancelled
    else:
        notify.job_finished(job.pk)
    return job


def annotate_job(*, job: Job) -> str:
    """Render the video with its boxes drawn; store it; return the stored name."""
    from videos.annotate import render_annotated

    detections = Detection.objects.filter(job=job).order_by("frame_index").only(
        "frame_index", "class_id", "label", "confidence", "x1", "y1", "x2", "y2")
    with tempfile.TemporaryDirectory() as tmp, local_or_url(job.input_file.name) as source:
        output = os.path.join(tmp, "annotated.mp4")
        render_annotated(source, output, detections.iterator(chunk_size=5000),
                         selection=selection_for(job))
        with open(output, "rb") as stream:
            name = default_storage.save(stored_name("annotated", "mp4"), stream)
    old = job.annotated_file.name if job.annotated_file else ""
    Job.objects.filter(pk=job.pk).update(annotated_file=name)
    if old:
        default_storage.delete(old)
    return name


def annotation_request(*, job: Job, enqueue) -> bool:
    """Ask for the annotated video once (again only if an earlier request got nowhere)."""
    now = timezone.now()
    retry_before = now - timedelta(seconds=settings.ANNOTATION_RETRY_SECONDS)
    asked = Job.objects.filter(Q(annotation_requested_at__isnull=True)
                               | Q(annotation_requested_at__lt=retry_before),
                               pk=job.pk).update(annotation_requested_at=now)
    if asked:
        enqueue(str(job.pk))
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
    from videos.tasks import process_video_part

    now = now or timezone.now()
    active = Q(job__status__in=(Job.Status.QUEUED, Job.Status.RUNNING))
    lapsed = VideoPart.objects.filter(
        active, status__in=(VideoPart.Status.QUEUED, VideoPart.Status.RUNNING),
        lease_expires__lt=now)
    stalled = VideoPart.objects.filter(
        active, status=VideoPart.Status.RUNNING, lease_expires__gte=now,
        progressed_at__lt=now - timedelta(seconds=settings.STALL_SECONDS)).exclude(
        lease_owner="")
    requeued = []
    for because, parts in ((VideoPart.Requeued.WORKER_LOST, lapsed),
                           (VideoPart.Requeued.STALLED, stalled)):
        for pk, job_id, index, expires, started in parts.values_list(
                "pk", "job_id", "index", "lease_expires", "attempts"):
            taken = VideoPart.objects.filter(pk=pk, lease_expires=expires).update(
                lease_owner="", requeued_because=because if started else "",
                lease_expires=now + timedelta(seconds=settings.QUEUE_STALE_SECONDS))
            if not taken:
                continue
            try:
                process_video_part.delay(str(job_id), index)
            except BROKER_ERRORS:
                VideoPart.objects.filter(pk=pk).update(lease_expires=now)  # next tick, again
                return requeued
            if because == VideoPart.Requeued.STALLED:
                why = f"stalled (no batch committed for {settings.STALL_SECONDS:g} s)"
            else:
                why = "lost its worker" if started else "was never started"
            requeued.append(f"video job {job_id} part {index} {why}")
    return requeued
