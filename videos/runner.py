"""Running video parts, in a worker: the video path's only module that loads the model.

A part is processed under a lease, which the heartbeat of the worker holding it renews
for as long as the task runs (``jobs.leases``); see ``videos.services`` for the
whole scheme. Each batch commits its detections with the part's progress, so that a
part taken over resumes from its last committed batch. The task that finishes the last
part finishes the job (decided under a row lock, not by a chord callback, so that a part
taken over after its worker died still counts).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from core.storage import local_or_url
from jobs import dispatch, runtime
from jobs.catalog import job_ref
from jobs.inference import batcher_for, weights_sha256
from jobs.models import Detection, Job, Video
from jobs.selectors import selection_for
from jobs.services import announce, job_fail
from jobs.thumbnails import thumbnail_save
from videos.models import VideoPart
from videos.pipeline import DecodeEnd, FrameReader, read_frame
from videos.services import PART_LEASE, annotate_job
from videos.tracking import job_track

logger = logging.getLogger(__name__)

DETECTION_PARAMS = ("min_confidence", "iou_threshold", "classes", "max_detections")
_EXACT_FRAME_COUNTS = ("video/mp4", "video/quicktime", "video/x-m4v", "video/3gpp")


class LeaseLost(Exception):
    """The part was taken over, or its job cancelled, failed or deleted."""


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
    return VideoPart.objects.select_related("job__video").get(job_id=job_id, index=index)


# How soon a part deferred by a busy worker is offered to the workers again.
DEFER_SECONDS = 2.0


def parts_limit() -> int:
    """How many video parts this process runs at once: VIDEO_PARTS_PER_WORKER, else from
    the worker's threads — half of them where it also takes image requests, else all.

    A part holds a Celery thread for as long as it runs (minutes); past the limit, a part
    is deferred rather than run, so that the worker's other threads stay free for image
    requests. (More parts at once would not go faster: they share the process's one
    inference thread.)
    """
    if settings.VIDEO_PARTS_PER_WORKER:
        return settings.VIDEO_PARTS_PER_WORKER
    me = runtime.current().identity
    threads = me.threads or settings.CELERY_WORKER_CONCURRENCY
    return max(1, threads // 2) if me.takes_images else threads


def _slots() -> runtime.Slots:
    return runtime.current().slots_for("video_part", parts_limit)


def _defer(job_id: str, index: int) -> bool:
    """Send a part that nobody holds to the queue again, a little later; False if it is
    not to be run (held by a live task, done, or its job finished or gone).

    Its lease is pushed back meanwhile: the message is alive, the watchdog need not send
    another (it still does if the message is lost, once the lease lapses).
    """
    now = timezone.now()
    kept = VideoPart.objects.filter(
        job_id=job_id, index=index, lease_owner="",
        status__in=(VideoPart.Status.QUEUED, VideoPart.Status.RUNNING),
        job__status__in=(Job.Status.QUEUED, Job.Status.RUNNING),
    ).update(lease_expires=now + timedelta(seconds=settings.QUEUE_STALE_SECONDS))
    if kept and not dispatch.send(dispatch.PROCESS_VIDEO_PART, job_id, index,
                                  countdown=DEFER_SECONDS):
        VideoPart.objects.filter(job_id=job_id, index=index,
                                 lease_owner="").update(lease_expires=now)  # watchdog
    return bool(kept)


def video_part_run(*, job_id: str, index: int, worker: str | None = None) -> None:
    """Process (or resume) one part of a video job, in a worker; defer it if this
    process already runs as many parts as it may (``parts_limit``)."""
    slots = _slots()
    if not slots.take():
        if _defer(job_id, index):
            logger.info("video job %s part %d: deferred (%d parts running here)", job_id,
                        index, parts_limit())
        return
    try:
        _run_part(job_id, index, worker or socket.gethostname())
    finally:
        slots.free()


def _run_part(job_id: str, index: int, worker: str) -> None:
    owner = f"{worker}:{os.getpid()}:{threading.get_ident()}"
    part = _claim(job_id, index, owner, worker)
    if part is None:
        return  # finished, cancelled, deleted, or another worker holds it
    job = part.job
    if part.attempts > settings.JOB_MAX_ATTEMPTS:
        tried = part.attempts - 1
        if part.requeued_because == VideoPart.Requeued.STALLED:
            fail(job, code="stalled", message=f"processing frames {part.start_frame}.. of "
                  f"this video made no progress for {settings.STALL_SECONDS:g} s, {tried} "
                  "times (its worker was alive)")
        else:
            fail(job, code="worker_lost", message=f"the worker died {tried} times "
                  f"processing frames {part.start_frame}.. of this video")
        return
    try:
        with runtime.current().hold(PART_LEASE, part.pk, owner):
            _process_part(job, part, owner)
    except LeaseLost:
        logger.info("video job %s part %d: stopped (cancelled, failed, deleted or taken "
                    "over)", job_id, index)


def _process_part(job: Job, part: VideoPart, owner: str) -> None:
    with batcher_for(job_ref(job)) as batcher:
        end = _detect_frames(job, part, owner, batcher)
    if end is not None:
        _part_done(job, part, owner, end)


def _detect_frames(job: Job, part: VideoPart, owner: str, batcher) -> DecodeEnd | None:
    """Detect in the part's frames from where it got to; how reading ended (None: the
    model could not be loaded, and the job failed)."""
    try:
        detector = batcher.detector()
    except FileNotFoundError as exc:
        fail(job, code="model_unavailable", message=str(exc))
        return None
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
                ).update(next_frame=batch[-1].index + 1,
                         frames_done=F("frames_done") + len(batch), progressed_at=timezone.now())
                if not renewed:
                    raise LeaseLost
                Video.objects.filter(job_id=job.pk).update(
                    frames_done=F("frames_done") + len(batch),
                    processing_ms=F("processing_ms") + elapsed_ms)
                Detection.objects.bulk_create(rows, batch_size=2000)
        return reader.end


def _part_done(job: Job, part: VideoPart, owner: str, end) -> None:
    video = job.video
    expected = part.end_frame if part.end_frame is not None else (video.frame_count or 0)
    tolerance = 0 if (part.end_frame is not None or job.content_type in _EXACT_FRAME_COUNTS) \
        else max(2, expected // 50)  # other containers only estimate their frame count
    if end.error or end.frames_read < expected - tolerance:
        stopped_ms = round(end.frames_read * 1000 / video.fps) if video.fps else 0
        video.refresh_from_db(fields=["frames_done"])
        fail(job, code="decode_failed", message=(
            f"decoding stopped at frame {end.frames_read} ({stopped_ms} ms) of the "
            f"{video.frame_count} the video claims" + (f": {end.error}" if end.error else "")
            + f"; the detections of the {video.frames_done} frames processed are kept"))
        return
    with transaction.atomic():
        # Under the job's row lock, exactly one finishing part sees that none is left.
        locked = Job.objects.select_for_update().filter(pk=job.pk,
                                                        status=Job.Status.RUNNING).first()
        last = locked is not None and not VideoPart.objects.filter(job=job).exclude(
            pk=part.pk).exclude(status=VideoPart.Status.DONE).exists()
        # The last part stays running, under its lease, while it finishes the job (tracks,
        # the annotated copy): if its worker dies meanwhile, the lease lapses and another
        # task finishes the job. (frames_read set: it is finishing, not stalled.)
        done = {} if last else {"status": VideoPart.Status.DONE, "lease_owner": ""}
        if not VideoPart.objects.filter(pk=part.pk, lease_owner=owner).update(
                frames_read=end.frames_read, progressed_at=timezone.now(), **done):
            raise LeaseLost
    if last:
        _finish_job(job)


def _finish_job(job: Job) -> None:
    if job.params.get("tracking"):
        try:
            job_track(job=job)
        except Exception:  # the detections stand, untracked: the job says tracks: null
            logger.exception("video job %s: its objects could not be tracked", job.pk)
    if job.params.get("annotate"):
        try:
            annotate_job(job=job)
        except Exception:  # the detections stand; GET .../annotated can render it again
            logger.exception("video job %s: the annotated video could not be made", job.pk)
    # What this worker runs the model with (a video's other parts ran on workers
    # configured alike: one deployment's settings).
    with batcher_for(job_ref(job)) as batcher:
        detector = batcher.detector()
    finished = timezone.now()
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
            status=Job.Status.SUCCEEDED, finished_at=finished,
            total_ms=(finished - job.created_at).total_seconds() * 1000,
            model_sha256=weights_sha256(detector), runtime=detector.runtime,
            precision=detector.precision)
        if updated:
            Video.objects.filter(job_id=job.pk).update(frames_total=F("frames_done"))
        VideoPart.objects.filter(job_id=job.pk).exclude(status=VideoPart.Status.DONE).update(
            status=VideoPart.Status.DONE, lease_owner="")
    if updated:
        announce(job)
        with local_or_url(job.input_file.name) as source:
            first = read_frame(source, 0)
        if first is not None:
            thumbnail_save(job, first)


def fail(job: Job, *, code: str, message: str) -> None:
    """Fail a video job: its other parts stop at their next batch; its webhook is sent."""
    job_fail(job=job, code=code, message=message)  # the other parts stop at their next batch
    VideoPart.objects.filter(job=job).exclude(status=VideoPart.Status.DONE).update(
        lease_owner="")
