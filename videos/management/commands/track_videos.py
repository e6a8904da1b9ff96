"""Track (again) the objects of finished video jobs from their stored detections: videos
submitted before tracking existed, with tracking=false, or to try other parameters. No
model is run: the boxes are the stored ones."""

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from jobs.models import Job
from videos.tracking import job_track


class Command(BaseCommand):
    help = ("Track the objects of succeeded video jobs from their stored detections (no "
            "model is run); the jobs' track ids and tracks are replaced.")

    def add_arguments(self, parser):
        parser.add_argument("job", nargs="*", help="job ids (default: with --untracked)")
        parser.add_argument("--untracked", action="store_true",
                            help="every succeeded video job that has no tracks yet")
        parser.add_argument("--buffer-ms", type=int, default=None,
                            help="the lost-track buffer (default: the job's, else "
                                 "TRACK_BUFFER_MS)")
        parser.add_argument("--activation-threshold", type=float, default=None,
                            help="the least confidence that starts a track (default: the "
                                 "job's, else TRACK_ACTIVATION_THRESHOLD)")

    def handle(self, *args, job, untracked, buffer_ms, activation_threshold, **options):
        if not job and not untracked:
            raise CommandError("name job ids, or give --untracked")
        jobs = Job.objects.select_related("video").filter(kind=Job.Kind.VIDEO,
                                                           status=Job.Status.SUCCEEDED)
        query = Q(pk__in=job) if job else Q(video__tracks__isnull=True)
        chosen = list(jobs.filter(query).order_by("created_at"))
        missing = set(job) - {str(j.pk) for j in chosen}
        if missing:
            raise CommandError(f"not a succeeded video job: {', '.join(sorted(missing))}")
        for one in chosen:
            params = dict(one.params, tracking=True)
            if buffer_ms is not None:
                params["track_buffer_ms"] = buffer_ms
            if activation_threshold is not None:
                params["track_activation_threshold"] = activation_threshold
            Job.objects.filter(pk=one.pk).update(params=params)
            one.params = params
            count = job_track(job=one)
            self.stdout.write(f"{one.pk}: {count} tracks")
