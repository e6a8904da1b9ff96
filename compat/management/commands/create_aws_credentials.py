from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from compat.models import AwsCredential


class Command(BaseCommand):
    help = ("Print a new AWS access key id and secret for USERNAME (the user is created if "
            "needed), for the Rekognition-compatible API.")

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username: str, **options):
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        credential, secret = AwsCredential.issue(user)
        self.stdout.write(f"aws_access_key_id = {credential.access_key_id}")
        self.stdout.write(f"aws_secret_access_key = {secret}")
