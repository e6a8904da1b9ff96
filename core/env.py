"""Typed settings from the environment that fail loudly on bad values."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r}: expected one of true/false/1/0/yes/no/on/off")


def env_int(name: str, default: int, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected an integer") from None
    _check_range(name, value, minimum, maximum)
    return value


def env_float(name: str, default: float, *, minimum: float | None = None,
              maximum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a number") from None
    _check_range(name, value, minimum, maximum)
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str, default_file: Path | None = None) -> str | None:
    """A secret from ``NAME``, or from the file named by ``NAME_FILE``.

    With neither set and ``default_file`` given, the secret is read from that file,
    which is created with a random value on first use (a laptop needs no set-up).
    """
    value = os.environ.get(name)
    path_name = os.environ.get(f"{name}_FILE")
    if value and path_name:
        raise ImproperlyConfigured(f"set {name} or {name}_FILE, not both")
    if value:
        return value
    if path_name:
        try:
            secret = Path(path_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path_name!r}: {exc}") from exc
        if not secret:
            raise ImproperlyConfigured(f"{name}_FILE={path_name!r} is empty")
        return secret
    if default_file is None:
        return None
    if not default_file.exists():
        _create_secret_file(default_file)
    return default_file.read_text(encoding="utf-8").strip()


def _create_secret_file(path: Path) -> None:
    """Write a random secret to ``path`` unless another process got there first."""
    import tempfile

    from django.core.management.utils import get_random_secret_key

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
        tmp.write(get_random_secret_key())
    try:
        os.chmod(tmp.name, 0o600)
        os.link(tmp.name, path)  # atomic: complete content, and only one process wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp.name)


def _check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value}: must be at most {maximum}")
