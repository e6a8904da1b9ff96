import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = ("For `make run`: create a local admin user and API token if there is no admin yet, "
            "and print how to log in and call the API.")

    def handle(self, *args, **options):
        users = get_user_model().objects
        credentials = settings.VAR_DIR / "local-admin.txt"
        admin = users.filter(is_superuser=True).order_by("pk").first()
        if admin is None:
            password = secrets.token_urlsafe(12)
            admin = users.create_superuser("admin", email="", password=password)
            credentials.parent.mkdir(parents=True, exist_ok=True)
            credentials.touch(mode=0o600)
            credentials.write_text(f"admin password: {password}\n")
            note = f"password: {password} (also in {credentials})"
        elif credentials.exists():
            note = credentials.read_text().strip()
        else:
            note = "password: the one you set"
        token, _ = Token.objects.get_or_create(user=admin)
        port = settings.PORT
        self.stdout.write(
            f"\nPMR is starting on http://localhost:{port}\n"
            f"  admin:     http://localhost:{port}/admin/  user: {admin.get_username()}  {note}\n"
            f"  API docs:  http://localhost:{port}/api/docs/\n"
            f"  API token: {token.key}\n"
            f"  try:       curl -H 'Authorization: Token {token.key}' "
            f"-F image=@../shared/testdata/darknet/dog.jpg localhost:{port}/api/detect/image\n")
