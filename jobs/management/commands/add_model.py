"""manage.py add_model: register a darknet model from files, as POST /api/models does."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApiError
from jobs import catalog


class Command(BaseCommand):
    help = ("Check a darknet model (cfg, weights, names) and register it under NAME: the "
            "same files are the version they were, new ones a new version (the default "
            "one unless --keep-default).")

    def add_arguments(self, parser):
        parser.add_argument("name", help="the model's name, e.g. shelf-v2")
        parser.add_argument("--cfg", required=True, type=Path)
        parser.add_argument("--weights", required=True, type=Path)
        parser.add_argument("--names", required=True, type=Path)
        parser.add_argument("--input-size", type=int, default=None,
                            help="the input side, a multiple of 32 (default: the cfg's)")
        parser.add_argument("--notes", default="")
        parser.add_argument("--keep-default", action="store_true",
                            help="a new version does not become the default one")

    def handle(self, *args, name, cfg, weights, names, input_size=None, notes="",
               keep_default=False, **options):
        for path in (cfg, weights, names):
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
        try:
            with cfg.open("rb") as c, weights.open("rb") as w, names.open("rb") as n:
                model, created = catalog.add_model(
                    name=name, cfg=c, weights=w, names=n, input_size=input_size,
                    notes=notes, make_default=not keep_default)
        except ApiError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        state = "added" if created else "already registered"
        default = " (the default version)" if model.is_default else ""
        self.stdout.write(f"{model.ref}: {state}{default}; {model.classes} classes, input "
                          f"{model.input_width}x{model.input_height}, weights sha256 "
                          f"{model.weights_sha256}")
