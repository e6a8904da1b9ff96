"""The models now live in jobs and review (which took over their tables): removed from this
app's state only, nothing is dropped."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('review', '0001_initial'),
        ('detection', '0005_job_base_url'),
        ('videos', '0003_part_job_in_jobs'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
                migrations.RemoveField(
                    model_name='addedbox',
                    name='created_by',
                ),
                migrations.RemoveField(
                    model_name='addedbox',
                    name='job',
                ),
                migrations.RemoveField(
                    model_name='reviewevent',
                    name='added_box',
                ),
                migrations.RemoveField(
                    model_name='detection',
                    name='job',
                ),
                migrations.RemoveField(
                    model_name='detection',
                    name='reviewed_by',
                ),
                migrations.RemoveField(
                    model_name='reviewevent',
                    name='detection',
                ),
                migrations.RemoveField(
                    model_name='job',
                    name='owner',
                ),
                migrations.RemoveField(
                    model_name='job',
                    name='parent',
                ),
                migrations.RemoveField(
                    model_name='job',
                    name='reviewed_by',
                ),
                migrations.RemoveField(
                    model_name='reviewevent',
                    name='job',
                ),
                migrations.RemoveField(
                    model_name='reviewevent',
                    name='user',
                ),
                migrations.DeleteModel(
                    name='WorkerHeartbeat',
                ),
                migrations.DeleteModel(
                    name='AddedBox',
                ),
                migrations.DeleteModel(
                    name='Detection',
                ),
                migrations.DeleteModel(
                    name='Job',
                ),
                migrations.DeleteModel(
                    name='ReviewEvent',
                ),
        ]),
    ]
