"""AWS-style credentials: an access key id mapped to a PMR user, its secret kept here."""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import models


def _fernet() -> Fernet:
    # The secrets must be readable (SigV4 signs with them), so they are encrypted at rest
    # with a key derived from SECRET_KEY rather than hashed.
    key = hashlib.sha256(f"pmr-aws-credentials:{settings.SECRET_KEY}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


class AwsCredential(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="aws_credentials")
    access_key_id = models.CharField(max_length=32, unique=True)
    encrypted_secret = models.TextField()
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.access_key_id} ({self.user})"

    @property
    def secret(self) -> str:
        try:
            return _fernet().decrypt(self.encrypted_secret.encode()).decode()
        except InvalidToken:
            return ""  # SECRET_KEY changed: the credential no longer verifies

    @classmethod
    def issue(cls, user) -> tuple[AwsCredential, str]:
        """A new access key id and secret for ``user``; the secret is returned once."""
        access_key_id = "AKPMR" + secrets.token_hex(8).upper()[:15]
        secret = secrets.token_urlsafe(30)[:40]
        credential = cls.objects.create(
            user=user, access_key_id=access_key_id,
            encrypted_secret=_fernet().encrypt(secret.encode()).decode())
        return credential, secret
