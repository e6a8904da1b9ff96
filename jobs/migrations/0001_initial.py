"""Job, Detection and WorkerHeartbeat, taken over from the detection app: its tables, with
their rows, become this app's (state only here; 0002 renames them)."""

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('detection', '0005_job_base_url'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
                migrations.CreateModel(
                    name='WorkerHeartbeat',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('hostname', models.CharField(max_length=255, unique=True)),
                        ('pid', models.PositiveIntegerField()),
                        ('device', models.CharField(max_length=64)),
                        ('model_name', models.CharField(max_length=64)),
                        ('precision', models.CharField(max_length=8)),
                        ('queues', models.CharField(blank=True, max_length=255)),
                        ('started_at', models.DateTimeField()),
                        ('last_seen', models.DateTimeField(db_index=True)),
                    ],
                    options={
                        'db_table': 'detection_workerheartbeat',
                    },
                ),
                migrations.CreateModel(
                    name='Job',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('kind', models.CharField(choices=[('image', 'Image'), ('video', 'Video')], max_length=8)),
                        ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], default='queued', max_length=16)),
                        ('params', models.JSONField(default=dict, help_text='the detection parameters used')),
                        ('model_name', models.CharField(max_length=64)),
                        ('model_sha256', models.CharField(blank=True, max_length=64)),
                        ('input_file', models.FileField(blank=True, max_length=255, upload_to='')),
                        ('original_filename', models.CharField(blank=True, max_length=255)),
                        ('content_type', models.CharField(blank=True, max_length=100)),
                        ('file_size', models.BigIntegerField(default=0)),
                        ('width', models.PositiveIntegerField(blank=True, null=True)),
                        ('height', models.PositiveIntegerField(blank=True, null=True)),
                        ('queue_ms', models.FloatField(blank=True, null=True)),
                        ('inference_ms', models.FloatField(blank=True, null=True)),
                        ('total_ms', models.FloatField(blank=True, null=True)),
                        ('batch_size', models.PositiveIntegerField(blank=True, help_text='images in the forward pass', null=True)),
                        ('worker', models.CharField(blank=True, max_length=255)),
                        ('attempts', models.PositiveSmallIntegerField(default=0, help_text='runs started')),
                        ('fps', models.FloatField(blank=True, null=True)),
                        ('frame_count', models.PositiveIntegerField(blank=True, null=True)),
                        ('duration_ms', models.PositiveBigIntegerField(blank=True, null=True)),
                        ('codec', models.CharField(blank=True, help_text="videos: the stream's FourCC", max_length=16)),
                        ('frames_total', models.PositiveIntegerField(blank=True, help_text='frames to process (after stride)', null=True)),
                        ('frames_done', models.PositiveIntegerField(default=0)),
                        ('processing_ms', models.FloatField(default=0, help_text='time spent processing frames')),
                        ('lease_expires', models.DateTimeField(blank=True, help_text='images: by when it must be started (once started: by when its worker must renew it) before the watchdog requeues it', null=True)),
                        ('idempotency_key', models.CharField(blank=True, max_length=255)),
                        ('callback_url', models.URLField(blank=True, max_length=2000)),
                        ('base_url', models.CharField(blank=True, help_text="the API's address as the submitter saw it: the absolute URLs in the webhook's body", max_length=500)),
                        ('webhook_log', models.JSONField(blank=True, default=list)),
                        ('annotated_file', models.FileField(blank=True, max_length=255, upload_to='')),
                        ('annotation_requested_at', models.DateTimeField(blank=True, null=True)),
                        ('error_code', models.CharField(blank=True, max_length=64)),
                        ('error_message', models.TextField(blank=True)),
                        ('reviewed_at', models.DateTimeField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('owner', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='jobs', to=settings.AUTH_USER_MODEL)),
                        ('parent', models.ForeignKey(blank=True, help_text='the job this one re-runs', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='reruns', to='jobs.job')),
                        ('reviewed_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'detection_job',
                        'ordering': ('-created_at',),
                    },
                ),
                migrations.CreateModel(
                    name='Detection',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('frame_index', models.PositiveIntegerField(default=0)),
                        ('timestamp_ms', models.PositiveBigIntegerField(default=0)),
                        ('class_id', models.PositiveSmallIntegerField()),
                        ('label', models.CharField(max_length=64)),
                        ('confidence', models.FloatField()),
                        ('x1', models.FloatField()),
                        ('y1', models.FloatField()),
                        ('x2', models.FloatField()),
                        ('y2', models.FloatField()),
                        ('review_status', models.CharField(choices=[('unreviewed', 'Unreviewed'), ('confirmed', 'Confirmed'), ('rejected', 'Rejected'), ('relabelled', 'Relabelled')], default='unreviewed', max_length=16)),
                        ('review_label', models.CharField(blank=True, help_text='when relabelled', max_length=64)),
                        ('review_class_id', models.PositiveSmallIntegerField(blank=True, null=True)),
                        ('reviewed_at', models.DateTimeField(blank=True, null=True)),
                        ('reviewed_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='detections', to='jobs.job')),
                    ],
                    options={
                        'db_table': 'detection_detection',
                        'ordering': ('job', 'frame_index', '-confidence', 'id'),
                    },
                ),
                migrations.AddIndex(
                    model_name='job',
                    index=models.Index(fields=['owner', '-created_at'], name='job_owner_created'),
                ),
                migrations.AddIndex(
                    model_name='job',
                    index=models.Index(fields=['owner', 'kind', 'status'], name='job_owner_kind_status'),
                ),
                migrations.AddIndex(
                    model_name='job',
                    index=models.Index(fields=['status', 'created_at'], name='job_status_created'),
                ),
                migrations.AddIndex(
                    model_name='job',
                    index=models.Index(fields=['status', 'lease_expires'], name='job_status_lease'),
                ),
                migrations.AddConstraint(
                    model_name='job',
                    constraint=models.UniqueConstraint(condition=models.Q(('idempotency_key', ''), _negated=True), fields=('owner', 'idempotency_key'), name='job_owner_idempotency_key'),
                ),
                migrations.AddIndex(
                    model_name='detection',
                    index=models.Index(fields=['job', 'frame_index', '-confidence'], name='det_job_frame'),
                ),
                migrations.AddIndex(
                    model_name='detection',
                    index=models.Index(fields=['job', 'label', 'frame_index'], name='det_job_label_frame'),
                ),
        ]),
    ]
