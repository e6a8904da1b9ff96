"""A part's job is now jobs.Job: the same table (state only; the foreign key stays)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0001_initial'),
        ('videos', '0002_part_progress'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
                migrations.AlterField(
                    model_name='videopart',
                    name='job',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='parts', to='jobs.job'),
                ),
        ]),
    ]
