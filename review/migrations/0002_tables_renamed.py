"""The tables taken over from the detection app get this app's names (rows kept), and so do
their content types (the admin's history and the users' permissions with them)."""

from django.db import migrations

MODELS = ("addedbox", "reviewevent",)


def content_types_follow(apps, schema_editor, old="detection", new="review"):
    content_type = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        if content_type.objects.filter(app_label=new, model=model).exists():
            continue  # a new database: made for this app already
        content_type.objects.filter(app_label=old, model=model).update(app_label=new)


def content_types_go_back(apps, schema_editor):
    content_types_follow(apps, schema_editor, old="review", new="detection")


class Migration(migrations.Migration):

    dependencies = [
        ("review", "0001_initial"),
        ("detection", "0006_models_moved_to_jobs_and_review"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelTable(name="addedbox", table=None),
        migrations.AlterModelTable(name="reviewevent", table=None),
        migrations.RunPython(content_types_follow, content_types_go_back),
    ]
