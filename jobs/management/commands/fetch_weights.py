from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from engine import MODELS, model_info
from engine.fetch import FetchError, fetch_model
from jobs import catalog


class Command(BaseCommand):
    help = ("Download a model's cfg, class names and weights into WEIGHTS_DIR and verify them "
            "(sha256), and register it as a model (GET /api/models). Does nothing when they "
            "are already there and valid.")

    def add_arguments(self, parser):
        parser.add_argument("--model", choices=sorted(MODELS), default=None,
                            help="model to fetch (default: DETECTOR_MODEL, now %(default)s)")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")

    def handle(self, *args, model=None, quiet=False, **options):
        name = model or settings.DETECTOR_MODEL
        if name not in MODELS:
            raise CommandError(f"{name!r} is not a built-in model ({', '.join(MODELS)}): "
                               "add your own with manage.py add_model")
        info = model_info(name)
        try:
            result = fetch_model(info, settings.WEIGHTS_DIR, progress=not quiet,
                                 log=lambda line: self.stderr.write(line))
        except FetchError as exc:
            raise CommandError(str(exc)) from exc
        verb = "downloaded from " + result.source if result.downloaded else result.source
        self.stdout.write(f"{name}: {verb}; sha256 {info.weights_sha256} verified; files in "
                          f"{result.paths.weights.parent}")
        try:
            registered = catalog.register_builtin(name)
        except DatabaseError:  # no database yet (before migrate): registered at first use
            registered = None
        if registered is not None:
            self.stdout.write(f"{name}: registered as model {registered.ref}")
