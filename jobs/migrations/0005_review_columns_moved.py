"""The job's review columns go: ``review`` 0003 copied them to ReviewMark rows."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0004_video_and_webhook_beside_the_job"),
        ("review", "0003_review_mark_beside_the_job"),
    ]

    operations = [
        migrations.RemoveField(model_name="job", name="reviewed_at"),
        migrations.RemoveField(model_name="job", name="reviewed_by"),
    ]
