"""Verifying AWS Signature Version 4 on incoming requests, as AWS does.

The expected signature is computed with botocore's own SigV4 implementation — the code
the AWS SDKs sign with — over exactly the headers the client says it signed, with the
client's timestamp and credential scope, and the secret PMR keeps for the access key.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime, timedelta

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from django.utils import timezone

from compat.models import AwsCredential

MAX_CLOCK_SKEW = timedelta(minutes=5)  # as AWS
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;_.-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})")


class SignatureError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class _ServerSigV4(SigV4Auth):
    """botocore's signer, told which headers the client signed."""

    def __init__(self, credentials, service: str, region: str, signed: list[str]) -> None:
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request):
        header_map = HTTPHeaders()
        for name in self._signed:
            header_map[name] = request.headers[name]
        return header_map


def _invalid(message: str) -> SignatureError:
    return SignatureError("InvalidSignatureException", message)


def verify(request, *, service: str) -> AwsCredential:
    """The credential that signed ``request`` (a Django request), or SignatureError."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        raise SignatureError("MissingAuthenticationTokenException",
                             "Missing Authentication Token")
    match = _AUTHORIZATION.fullmatch(header.strip())
    if match is None:
        raise SignatureError("IncompleteSignatureException",
                             "Authorization header requires 'Credential', 'SignedHeaders' and "
                             "'Signature' parameters of AWS4-HMAC-SHA256")
    credential = AwsCredential.objects.select_related("user").filter(
        access_key_id=match["key"], active=True).first()
    if credential is None:
        raise SignatureError("UnrecognizedClientException",
                             "The security token included in the request is invalid.")
    if match["service"] != service:
        raise _invalid(f"Credential should be scoped to correct service: '{service}'.")

    stamp = request.META.get("HTTP_X_AMZ_DATE", "")
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise _invalid("Authorization header requires the X-Amz-Date header") from None
    now = timezone.now()
    if signed_at < now - MAX_CLOCK_SKEW:
        raise _invalid(f"Signature expired: {stamp} is now earlier than "
                       f"{(now - MAX_CLOCK_SKEW):%Y%m%dT%H%M%SZ} "
                       f"({now:%Y%m%dT%H%M%SZ} - 5 min.)")
    if signed_at > now + MAX_CLOCK_SKEW:
        raise _invalid(f"Signature not yet current: {stamp} is still later than "
                       f"{(now + MAX_CLOCK_SKEW):%Y%m%dT%H%M%SZ} "
                       f"({now:%Y%m%dT%H%M%SZ} + 5 min.)")
    if stamp[:8] != match["date"]:
        raise _invalid("Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                       "version of date from HTTP")

    signed = match["signed"].split(";")
    if "host" not in signed:
        raise _invalid("'Host' must be a signed header")
    headers = {}
    for name in signed:
        value = request.headers.get(name)
        if value is None:
            raise _invalid(f"the signed header '{name}' is missing")
        headers[name] = value
    unsigned = AWSRequest(method=request.method, url=request.build_absolute_uri(),
                          data=request.body, headers=headers)
    unsigned.context["timestamp"] = stamp
    signer = _ServerSigV4(Credentials(credential.access_key_id, credential.secret),
                          match["service"], match["region"], signed)
    expected = signer.signature(signer.string_to_sign(unsigned, signer.canonical_request(unsigned)),
                                unsigned)
    if not hmac.compare_digest(expected, match["signature"]):
        raise _invalid("The request signature we calculated does not match the signature you "
                       "provided. Check your AWS Secret Access Key and signing method. Consult "
                       "the service documentation for details.")
    if not credential.user.is_active:
        raise SignatureError("AccessDeniedException", "the user of this access key is disabled")
    AwsCredential.objects.filter(pk=credential.pk).update(last_used_at=now)
    return credential
