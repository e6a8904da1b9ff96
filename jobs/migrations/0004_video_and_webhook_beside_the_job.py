"""A video job's facts and progress move to its ``Video`` row, and a job's callback to its
``Webhook`` row: rows made from every existing job's columns, then the columns dropped."""

import django.db.models.deletion
from django.db import migrations, models

VIDEO_FIELDS = ("fps", "frame_count", "duration_ms", "codec", "frames_total", "frames_done",
                "processing_ms", "annotated_file", "annotation_requested_at")


def rows_from_columns(apps, schema_editor):
    job, video, webhook = (apps.get_model("jobs", name) for name in ("Job", "Video", "Webhook"))
    for row in job.objects.filter(kind="video").values("id", *VIDEO_FIELDS).iterator():
        video.objects.create(job_id=row.pop("id"), **row)
    for row in job.objects.exclude(callback_url="").values(
            "id", "callback_url", "base_url", "webhook_log").iterator():
        webhook.objects.create(job_id=row["id"], url=row["callback_url"],
                               base_url=row["base_url"], log=row["webhook_log"])


def columns_from_rows(apps, schema_editor):
    job, video, webhook = (apps.get_model("jobs", name) for name in ("Job", "Video", "Webhook"))
    for row in video.objects.values("job_id", *VIDEO_FIELDS).iterator():
        job.objects.filter(pk=row.pop("job_id")).update(**row)
    for row in webhook.objects.values("job_id", "url", "base_url", "log").iterator():
        job.objects.filter(pk=row["job_id"]).update(
            callback_url=row["url"], base_url=row["base_url"], webhook_log=row["log"])


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0003_codec_named_by_ffmpeg"),
    ]

    operations = [
        migrations.CreateModel(
            name="Video",
            fields=[
                ("job", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                             primary_key=True, related_name="video",
                                             serialize=False, to="jobs.job")),
                ("fps", models.FloatField(blank=True, null=True)),
                ("frame_count", models.PositiveIntegerField(blank=True, null=True)),
                ("duration_ms", models.PositiveBigIntegerField(blank=True, null=True)),
                ("codec", models.CharField(blank=True, max_length=16,
                                           help_text="the stream's codec, as FFmpeg names it")),
                ("frames_total", models.PositiveIntegerField(
                    blank=True, help_text="frames to process (after stride)", null=True)),
                ("frames_done", models.PositiveIntegerField(default=0)),
                ("processing_ms", models.FloatField(default=0,
                                                    help_text="time spent processing frames")),
                ("annotated_file", models.FileField(blank=True, max_length=255, upload_to="")),
                ("annotation_requested_at", models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name="Webhook",
            fields=[
                ("job", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                             primary_key=True, related_name="webhook",
                                             serialize=False, to="jobs.job")),
                ("url", models.URLField(max_length=2000)),
                ("base_url", models.CharField(
                    blank=True, max_length=500, help_text="the API's address as the submitter "
                    "saw it: the absolute URLs in the body")),
                ("log", models.JSONField(blank=True, default=list)),
            ],
        ),
        migrations.RunPython(rows_from_columns, columns_from_rows),
        *(migrations.RemoveField(model_name="job", name=name) for name in (
            *VIDEO_FIELDS, "callback_url", "base_url", "webhook_log")),
    ]
