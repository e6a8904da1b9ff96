"""The Celery application: settings come from Django's, under the CELERY_ namespace."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pmr.settings")

app = Celery("pmr")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
