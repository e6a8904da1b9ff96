"""A finished job's thumbnail (the dashboard's job list shows it): made once, by the worker
that finishes the job — never while a page is served."""

from __future__ import annotations

import io
import logging

import numpy as np
from django.core.files.storage import default_storage
from PIL import Image

from jobs.models import Job

logger = logging.getLogger(__name__)

# Twice the list's 96 px: sharp on high-density screens.
SIZE = 192


def thumbnail_name(job: Job) -> str:
    return f"thumbnails/{job.pk}.jpg"


def thumbnail_save(job: Job, rgb: np.ndarray) -> str | None:
    """Store the job's thumbnail from an (H, W, 3) RGB image; None if it could not be
    (a job is never failed for its thumbnail)."""
    try:
        picture = Image.fromarray(rgb)
        picture.thumbnail((SIZE, SIZE))
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, "JPEG", quality=80)
        buffer.seek(0)
        return default_storage.save(thumbnail_name(job), buffer)
    except (OSError, ValueError):
        logger.warning("job %s: no thumbnail", job.pk, exc_info=True)
        return None
