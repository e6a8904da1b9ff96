from django.conf import settings
from django.core.files.storage import storages
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "With STORAGE_BACKEND=s3, create the bucket if it does not exist (idempotent)."

    def handle(self, *args, **options):
        if settings.STORAGE_BACKEND != "s3":
            self.stdout.write("local storage: nothing to do")
            return
        storage = storages["default"]
        bucket = storage.bucket
        client = storage.connection.meta.client
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket.name in existing:
            self.stdout.write(f"bucket {bucket.name} exists")
            return
        client.create_bucket(Bucket=bucket.name)
        self.stdout.write(f"bucket {bucket.name} created")
