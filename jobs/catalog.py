"""The models installed here, without loading one (no PyTorch): which are on disk, their
class names, the sha256 of their weights. The web tier validates requests with these."""

from __future__ import annotations

from functools import cache

from django.conf import settings

from engine import MODELS, model_info, read_names
from engine.fetch import sha256_of


def installed_models() -> list[str]:
    """The registered models whose files are in WEIGHTS_DIR."""
    return [name for name, info in MODELS.items()
            if not info.paths(settings.WEIGHTS_DIR).missing()]


@cache
def class_names(model: str) -> tuple[str, ...]:
    """The model's class names, read from its names file (no network to load)."""
    return tuple(read_names(model_info(model).paths(settings.WEIGHTS_DIR).names))


@cache
def weights_sha256(model: str) -> str:
    """sha256 of the model's weights file as found on disk (hashed once per process)."""
    return sha256_of(model_info(model).paths(settings.WEIGHTS_DIR).weights)
