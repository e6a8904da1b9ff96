"""A job marked reviewed gets a ``ReviewMark`` row (by whom, when), made from the job's own
columns, which ``jobs`` 0005 then drops."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def marks_from_columns(apps, schema_editor):
    job, mark = apps.get_model("jobs", "Job"), apps.get_model("review", "ReviewMark")
    for row in job.objects.filter(reviewed_at__isnull=False).values(
            "id", "reviewed_at", "reviewed_by_id").iterator():
        mark.objects.create(job_id=row["id"], reviewed_at=row["reviewed_at"],
                            reviewed_by_id=row["reviewed_by_id"])


def columns_from_marks(apps, schema_editor):
    job, mark = apps.get_model("jobs", "Job"), apps.get_model("review", "ReviewMark")
    for row in mark.objects.values("job_id", "reviewed_at", "reviewed_by_id").iterator():
        job.objects.filter(pk=row["job_id"]).update(reviewed_at=row["reviewed_at"],
                                                    reviewed_by_id=row["reviewed_by_id"])


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0004_video_and_webhook_beside_the_job"),
        ("review", "0002_tables_renamed"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ReviewMark",
            fields=[
                ("job", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                             primary_key=True, related_name="review_mark",
                                             serialize=False, to="jobs.job")),
                ("reviewed_at", models.DateTimeField()),
                ("reviewed_by", models.ForeignKey(
                    blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                    related_name="+", to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.RunPython(marks_from_columns, columns_from_marks),
    ]
