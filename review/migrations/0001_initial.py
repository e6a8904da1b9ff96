"""AddedBox and ReviewEvent, taken over from the detection app: its tables, with their rows,
become this app's (state only here; 0002 renames them)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('detection', '0005_job_base_url'),
        ('jobs', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
                migrations.CreateModel(
                    name='AddedBox',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('frame_index', models.PositiveIntegerField(default=0)),
                        ('timestamp_ms', models.PositiveBigIntegerField(default=0)),
                        ('class_id', models.PositiveSmallIntegerField()),
                        ('label', models.CharField(max_length=64)),
                        ('x1', models.FloatField()),
                        ('y1', models.FloatField()),
                        ('x2', models.FloatField()),
                        ('y2', models.FloatField()),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('removed_at', models.DateTimeField(blank=True, null=True)),
                        ('created_by', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='added_boxes', to='jobs.job')),
                    ],
                    options={
                        'db_table': 'detection_addedbox',
                        'ordering': ('job', 'frame_index', 'id'),
                    },
                ),
                migrations.CreateModel(
                    name='ReviewEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('action', models.CharField(choices=[('confirm', 'Confirm'), ('reject', 'Reject'), ('relabel', 'Relabel'), ('reset', 'Reset'), ('add_box', 'Add Box'), ('remove_box', 'Remove Box'), ('mark_reviewed', 'Mark Reviewed'), ('rerun', 'Rerun')], max_length=16)),
                        ('details', models.JSONField(blank=True, default=dict)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('added_box', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='review_events', to='review.addedbox')),
                        ('detection', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='review_events', to='jobs.detection')),
                        ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='review_events', to='jobs.job')),
                        ('user', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'detection_reviewevent',
                        'ordering': ('-created_at', '-id'),
                    },
                ),
                migrations.AddIndex(
                    model_name='addedbox',
                    index=models.Index(fields=['job', 'frame_index'], name='addedbox_job_frame'),
                ),
                migrations.AddIndex(
                    model_name='reviewevent',
                    index=models.Index(fields=['job', '-created_at'], name='review_job_created'),
                ),
        ]),
    ]
