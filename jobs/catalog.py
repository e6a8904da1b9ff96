"""The models jobs may run — the registry of ``DetectorModel`` versions — without loading
one (no PyTorch): resolve what a request names, check and store an upload, register the
built-in models whose files ``fetch_weights`` put in WEIGHTS_DIR, and give a worker the
local files of a version (``local_files``). The web tier validates requests with these.

A request names a model as ``name`` (its default version) or ``name@version``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Max, Q

from core.errors import ApiError
from engine import MODELS, CfgError, WeightsError, read_names
from engine.cfg import NetworkSpec, parse_cfg_text
from engine.fetch import sha256_of
from engine.registry import ModelPaths
from engine.weights import expected_size, read_header
from jobs.models import DetectorModel, Job, model_storage_name

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FILES = ("cfg", "weights", "names")


@dataclass(frozen=True)
class Choice:
    """What a request's ``model`` resolved to. ``version`` is None only for a built-in
    model whose files are not fetched here (its jobs fail with model_unavailable and
    say how to fetch it)."""

    name: str
    version: int | None
    class_names: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@version`` -> (name, version or None); a 400 if malformed."""
    name, at, version = ref.strip().partition("@")
    if not NAME_PATTERN.match(name) or (at and not version.isdigit()) or version == "0":
        raise ApiError("invalid_model", f"{ref!r} is not a model: expected NAME or "
                       "NAME@VERSION (letters, digits, '.', '_', '-'; version 1 or more)")
    return name, int(version) if at else None


def job_ref(job: Job) -> str:
    """The model version a job runs, as ``name@version`` (the name alone for a job that
    recorded none: its model's default version, as when it was submitted)."""
    return f"{job.model_name}@{job.model_version}" if job.model_version else job.model_name


def known_names() -> list[str]:
    """The names a request may use: every registered model and every built-in one."""
    register_builtins()
    return sorted(set(DetectorModel.objects.values_list("name", flat=True)) | set(MODELS))


def unknown(ref: str) -> ApiError:
    known = known_names()
    return ApiError("unknown_model", f"unknown model {ref!r} (known: {', '.join(known)})",
                    details={"known": known})


def find(ref: str | None) -> DetectorModel | None:
    """The registered version a reference names (None: none registered under it)."""
    name, version = parse_ref(ref or settings.DETECTOR_MODEL)
    builtin = name in MODELS
    if builtin and _registered.get(name) != _stamp(name):
        register_builtin(name)
    found = _version(name, version)
    if found is None and builtin and _registered.pop(name, None) is not None:
        register_builtin(name)  # its row is gone since this process registered it: again
        found = _version(name, version)
    return found


def _version(name: str, version: int | None) -> DetectorModel | None:
    versions = DetectorModel.objects.filter(name=name)
    if version is None:
        return versions.filter(is_default=True).first() or versions.first()
    return versions.filter(version=version).first()


def resolve(ref: str | None) -> Choice:
    """What a request's ``model`` (None: DETECTOR_MODEL) names; a 400 listing the known
    models if it names none."""
    ref = ref or settings.DETECTOR_MODEL
    model = find(ref)
    if model is not None:
        return Choice(model.name, model.version, tuple(model.class_names))
    name, version = parse_ref(ref)
    if name in MODELS and version is None:  # known, not fetched: its job says so
        return Choice(name, None, _builtin_names_on_disk(name))
    raise unknown(ref)


def _builtin_names_on_disk(name: str) -> tuple[str, ...]:
    path = MODELS[name].paths(settings.WEIGHTS_DIR).names
    return tuple(read_names(path)) if path.is_file() else ()


def class_names(ref: str) -> tuple[str, ...]:
    """The class names of the model version a reference names."""
    return resolve(ref).class_names


@lru_cache(maxsize=1024)
def _resize(name: str, version: int, weights_sha256: str) -> str | None:
    model = DetectorModel.objects.filter(name=name, version=version,
                                         weights_sha256=weights_sha256).first()
    if model is None:
        return None
    return "letterbox" if model.letter_box else "stretch"


def resize_of(job: Job) -> str | None:
    """How the job's model brought its images to the network's size: "letterbox"
    (aspect kept, gray bars) or "stretch" (the fork's default); None if unknown (a job
    not run yet, or its model since deleted)."""
    if not job.model_version or not job.model_sha256:
        return None
    return _resize(job.model_name, job.model_version, job.model_sha256)


def installed_models() -> list[str]:
    """The models a job can run here, by name: registered, files present."""
    register_builtins()
    return sorted(set(DetectorModel.objects.values_list("name", flat=True)))


# --- Built-in models ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Facts:
    """What registering a set of files needs to know of them."""

    sha256: dict[str, str]
    weights_size: int
    spec: NetworkSpec
    names: tuple[str, ...]


@cache
def _builtin_facts(name: str, stamp: tuple) -> _Facts:
    """The built-in model's files on disk, hashed once per process per (size, mtime)."""
    paths = MODELS[name].paths(settings.WEIGHTS_DIR)
    spec = parse_cfg_text(paths.cfg.read_text(encoding="utf-8"), str(paths.cfg))
    return _Facts(sha256={kind: sha256_of(getattr(paths, kind)) for kind in FILES},
                  weights_size=paths.weights.stat().st_size, spec=spec,
                  names=tuple(read_names(paths.names)))


# What this process last registered of each built-in model: its files' (size, mtime)
# stamp. While the files keep it, a request need not look for their version again.
_registered: dict[str, tuple] = {}


def _stamp(name: str) -> tuple | None:
    """(size, mtime) of the built-in model's cfg, weights and names; None if one is
    missing."""
    paths = MODELS[name].paths(settings.WEIGHTS_DIR)
    try:
        stats = [path.stat() for path in (paths.cfg, paths.weights, paths.names)]
    except FileNotFoundError:
        return None
    return tuple((stat.st_size, stat.st_mtime_ns) for stat in stats)


def register_builtin(name: str) -> DetectorModel | None:
    """Register the built-in model's files in WEIGHTS_DIR (once: the same files are the
    same version; others, say a fetch after a change of source, a new one). None if
    they are not fetched here."""
    stamp = _stamp(name)
    if stamp is None:
        _registered.pop(name, None)
        return None
    facts = _builtin_facts(name, stamp)
    model = _create(name, facts, builtin=True, input_size=None, user=None, notes=(
        "built in: fetched by manage.py fetch_weights into WEIGHTS_DIR"), make_default=None)[0]
    _registered[name] = stamp
    return model


def register_builtins() -> None:
    for name in MODELS:
        register_builtin(name)


# --- Uploads -----------------------------------------------------------------------------

def _stream_sha256(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def _text(stream: IO[bytes], what: str, limit: int = 4 * 1024 * 1024) -> str:
    stream.seek(0)
    data = stream.read(limit + 1)
    stream.seek(0)
    if len(data) > limit:
        raise ApiError(f"invalid_{what}", f"the {what} file is over {limit} bytes: not a "
                       f"darknet {what} file")
    if b"\0" in data:
        raise ApiError(f"invalid_{what}", f"the {what} file is binary: not a darknet "
                       f"{what} file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(f"invalid_{what}", f"the {what} file is not UTF-8 text ({exc}): not "
                       f"a darknet {what} file") from None


def check_upload(*, cfg: IO[bytes], weights: IO[bytes], names: IO[bytes],
                 input_size: int | None = None, cfg_name: str = "cfg") -> _Facts:
    """Check that three uploaded files are one darknet model (the cfg parses, the
    weights fill it exactly, the names count its classes); a 400 saying what does not
    fit otherwise. Nothing is stored."""
    text = _text(cfg, "cfg")
    try:
        spec = parse_cfg_text(text, cfg_name, input_size or None)
    except CfgError as exc:
        raise ApiError("invalid_cfg", str(exc)) from None
    except (ValueError, LookupError, ArithmeticError, TypeError, RecursionError) as exc:
        # What the parser did not foresee is still the upload's fault, not the service's.
        raise ApiError("invalid_cfg", f"{cfg_name}: cannot be read as a darknet cfg "
                       f"({type(exc).__name__}: {exc})") from None
    weights.seek(0)
    head = weights.read(20)
    weights.seek(0, os.SEEK_END)
    size = weights.tell()
    weights.seek(0)
    try:
        header, _ = read_header(head, "weights")
    except WeightsError as exc:
        raise ApiError("invalid_weights", f"{exc}: not a darknet weights file") from None
    expected = expected_size(spec, header)
    if size != expected:
        how = (f"{expected - size} bytes too short" if size < expected
               else f"{size - expected} bytes left over")
        raise ApiError("weights_mismatch", (
            f"the weights ({size} bytes) do not fit the cfg, which needs {expected} bytes: "
            f"{how} (a different cfg, a truncated upload, or not a darknet weights file)"),
            details={"expected_bytes": expected, "actual_bytes": size})
    class_list = tuple(name.strip() for name in _text(names, "names").splitlines()
                       if name.strip())
    if len(class_list) != spec.classes:
        raise ApiError("names_mismatch", f"the names file has {len(class_list)} names; "
                       f"the cfg has {spec.classes} classes",
                       details={"names": len(class_list), "classes": spec.classes})
    return _Facts(sha256={"cfg": _stream_sha256(cfg), "weights": _stream_sha256(weights),
                          "names": _stream_sha256(names)},
                  weights_size=size, spec=spec, names=class_list)


def add_model(*, name: str, cfg: IO[bytes], weights: IO[bytes], names: IO[bytes],
              input_size: int | None = None, user=None, notes: str = "",
              make_default: bool | None = True) -> tuple[DetectorModel, bool]:
    """Check and register an uploaded model: (its version, whether it is new). The same
    files under the same name are the version they were; new ones a new version, the
    default from now on unless ``make_default`` is False. Nothing is stored unless every
    check passed."""
    if not NAME_PATTERN.match(name):
        raise ApiError("invalid_name", f"{name!r}: a model's name is 1-64 letters, digits, "
                       "'.', '_' or '-', starting with a letter or digit")
    if name in MODELS:
        raise ApiError("reserved_name", f"{name!r} is a built-in model's name "
                       "(fetch_weights registers it): choose another")
    if input_size is not None and (input_size <= 0 or input_size % 32):
        raise ApiError("invalid_input_size", f"input_size must be a positive multiple of 32, "
                       f"got {input_size}")
    facts = check_upload(cfg=cfg, weights=weights, names=names, input_size=input_size)
    model, created = _create(name, facts, builtin=False, input_size=input_size, user=user,
                             notes=notes, make_default=make_default,
                             files={"cfg": cfg, "weights": weights, "names": names})
    if not created and make_default and not model.is_default:
        set_default(model)
    return model, created


def _same(name: str, facts: _Facts) -> DetectorModel | None:
    """The version of ``name`` that is these files at this input size, if there is one."""
    return DetectorModel.objects.filter(
        name=name, cfg_sha256=facts.sha256["cfg"], weights_sha256=facts.sha256["weights"],
        names_sha256=facts.sha256["names"], input_width=facts.spec.width,
        input_height=facts.spec.height).first()


def _create(name: str, facts: _Facts, *, builtin: bool, input_size: int | None, user,
            notes: str, make_default: bool | None,
            files: dict[str, IO[bytes]] | None = None) -> tuple[DetectorModel, bool]:
    """The version these files are (, False), or a new one: the files stored (uploads)
    and the version created (, True); ``make_default`` None: default only if the name
    has no default yet."""
    for attempt in range(3):  # two uploads at once may take the same number: try the next
        same = _same(name, facts)
        if same is not None:  # registered before, or meanwhile by another process
            return same, False
        version = (DetectorModel.objects.filter(name=name).aggregate(top=Max("version"))["top"]
                   or 0) + 1
        stored: dict[str, str] = {}
        try:
            for kind, stream in (files or {}).items():
                stream.seek(0)
                stored[kind] = default_storage.save(
                    model_storage_name(name, version, f"{name}.{kind}"), File(stream))
            with transaction.atomic():
                has_default = DetectorModel.objects.select_for_update().filter(
                    name=name, is_default=True).exists()
                default = bool(make_default) or (make_default is None and not has_default)
                if default:
                    DetectorModel.objects.filter(name=name, is_default=True).update(
                        is_default=False)
                return DetectorModel.objects.create(
                    name=name, version=version, is_default=default, builtin=builtin,
                    cfg_file=stored.get("cfg", ""), weights_file=stored.get("weights", ""),
                    names_file=stored.get("names", ""), cfg_sha256=facts.sha256["cfg"],
                    weights_sha256=facts.sha256["weights"],
                    names_sha256=facts.sha256["names"], weights_size=facts.weights_size,
                    classes=facts.spec.classes, class_names=list(facts.names),
                    input_width=facts.spec.width, input_height=facts.spec.height,
                    input_size_set=input_size is not None,
                    letter_box=facts.spec.letter_box, notes=notes, created_by=user), True
        except IntegrityError:
            for stored_name in stored.values():
                default_storage.delete(stored_name)
            if attempt == 2:
                raise
        except Exception:
            for stored_name in stored.values():
                default_storage.delete(stored_name)
            raise
    raise AssertionError("unreachable")


# --- Default, delete ---------------------------------------------------------------------

@transaction.atomic
def set_default(model: DetectorModel) -> DetectorModel:
    DetectorModel.objects.filter(name=model.name, is_default=True).exclude(pk=model.pk).update(
        is_default=False)
    DetectorModel.objects.filter(pk=model.pk).update(is_default=True)
    model.is_default = True
    return model


def unfinished_jobs(models: Iterable[DetectorModel]) -> int:
    """Queued or running jobs of these versions (a job that recorded no version runs its
    model's default one)."""
    count = 0
    for model in models:
        runs = Q(model_version=model.version)
        if model.is_default:
            runs |= Q(model_version__isnull=True)
        count += Job.objects.filter(runs, model_name=model.name).exclude(
            status__in=Job.FINISHED).count()
    return count


def delete_models(models: list[DetectorModel]) -> None:
    """Delete versions and their stored files; a 409 while a job of one is queued or
    running, or for the default version of DETECTOR_MODEL (what requests naming no model
    run)."""
    busy = unfinished_jobs(models)
    if busy:
        raise ApiError("model_in_use", f"{busy} queued or running job(s) use this model: "
                       "wait for them or cancel them first", status_code=409,
                       details={"unfinished_jobs": busy})
    for model in models:
        if model.builtin:
            raise ApiError("builtin_model", f"{model.ref} is built in: it is registered "
                           "from its files in WEIGHTS_DIR, which fetch_weights manages",
                           status_code=409)
        if model.name == settings.DETECTOR_MODEL and model.is_default:
            raise ApiError("model_in_use", f"{model.ref} is the default version of "
                           "DETECTOR_MODEL, which requests naming no model run",
                           status_code=409)
    for model in models:
        with transaction.atomic():
            locked = DetectorModel.objects.select_for_update().filter(pk=model.pk).first()
            if locked is None:
                continue
            locked.delete()
            if model.is_default:  # the newest left becomes the default
                newest = DetectorModel.objects.filter(name=model.name).first()
                if newest is not None:
                    set_default(newest)
        for stored_name in (model.cfg_file, model.weights_file, model.names_file):
            if stored_name:
                default_storage.delete(stored_name)


# --- A worker's copy ---------------------------------------------------------------------

def model_cache_dir() -> Path:
    return Path(settings.MODEL_CACHE_DIR)


def local_files(model: DetectorModel) -> ModelPaths:
    """The version's files on this machine: a built-in model's in WEIGHTS_DIR; an
    uploaded one's copied from storage into MODEL_CACHE_DIR once, checked by sha256 (a
    copy that does not match is fetched again)."""
    if model.builtin:
        return MODELS[model.name].paths(settings.WEIGHTS_DIR)
    folder = model_cache_dir() / model.weights_sha256[:16] / f"{model.name}-{model.version}"
    paths = ModelPaths(cfg=folder / "model.cfg", weights=folder / "model.weights",
                       names=folder / "model.names")
    stored = {"cfg": model.cfg_file, "weights": model.weights_file, "names": model.names_file}
    expected = {"cfg": model.cfg_sha256, "weights": model.weights_sha256,
                "names": model.names_sha256}
    folder.mkdir(parents=True, exist_ok=True)
    for kind in FILES:
        target: Path = getattr(paths, kind)
        if target.is_file() and _verified(target, expected[kind]):
            continue
        with tempfile.NamedTemporaryFile(dir=folder, delete=False) as copy:
            try:
                with default_storage.open(stored[kind], "rb") as source:
                    shutil.copyfileobj(source, copy, 1 << 20)
            except FileNotFoundError:
                os.unlink(copy.name)
                raise FileNotFoundError(f"model {model.ref}: its {kind} file "
                                        f"{stored[kind]!r} is missing from storage") from None
        actual = sha256_of(Path(copy.name))
        if actual != expected[kind]:
            os.unlink(copy.name)
            raise FileNotFoundError(f"model {model.ref}: the stored {kind} file has sha256 "
                                    f"{actual}, not the {expected[kind]} recorded")
        os.replace(copy.name, target)
    return paths


@cache
def _verified_at(path: Path, stamp: tuple, sha256: str) -> bool:
    return sha256_of(path) == sha256


def _verified(path: Path, sha256: str) -> bool:
    stat = path.stat()
    return _verified_at(path, (stat.st_size, stat.st_mtime_ns), sha256)

