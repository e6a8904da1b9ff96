"""The migrations of databases made before the models moved to ``jobs`` and ``review``.

This app has no models and no code: it is installed so that ``migrate`` can upgrade an
older database (its last migration hands the tables over to the new apps, data kept), and
so that a new database is made by the same path.
"""

from django.apps import AppConfig


class DetectionConfig(AppConfig):
    name = "detection"
    verbose_name = "Detection (migrations of older databases)"
    default_auto_field = "django.db.models.BigAutoField"
