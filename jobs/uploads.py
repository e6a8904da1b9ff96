"""Naming what uploads become in storage: generated paths, display names."""

from __future__ import annotations

import uuid

from django.utils import timezone


def stored_name(kind: str, extension: str) -> str:
    """A generated storage path: nothing of the client's file name reaches the disk."""
    today = timezone.now()
    return f"uploads/{kind}/{today:%Y/%m/%d}/{uuid.uuid4().hex}.{extension}"


def safe_original_name(name: str | None) -> str:
    """The client's file name, for display only: no path, no control characters."""
    if not name:
        return ""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in base)
    return cleaned[:255]
