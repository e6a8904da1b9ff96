"""Where uploads and outputs live: local files (default) or an S3-compatible object store.

With S3 (STORAGE_BACKEND=s3), web processes and workers on different hosts share
uploads and outputs through the bucket. Workers read an image (a few MB at most) with
``default_storage.open``, one GET; a video streams through a short-lived presigned URL
that OpenCV's FFmpeg backend reads over HTTP — it is never copied whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.core.files.storage import FileSystemStorage, storages


@contextlib.contextmanager
def local_or_url(name: str, *, expires: int = 6 * 3600) -> Iterator[str]:
    """Something OpenCV can open for a stored file: its path, or a presigned URL."""
    storage = storages["default"]
    if isinstance(storage, FileSystemStorage):
        yield storage.path(name)
        return
    yield storage.url(name, expire=expires)
