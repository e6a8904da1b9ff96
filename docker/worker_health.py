"""Container healthcheck for a worker: its heartbeat row is recent (it is up and polling)."""

import os
import socket
import sys
from datetime import timedelta

sys.path.insert(0, "/app")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pmr.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from jobs.models import WorkerHeartbeat  # noqa: E402

since = timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)
alive = WorkerHeartbeat.objects.filter(hostname=f"worker@{socket.gethostname()}",
                                       last_seen__gte=since).exists()
sys.exit(0 if alive else 1)
