"""The AWS JSON 1.1 protocol on DRF, for the Rekognition-compatible API.

``POST`` with ``X-Amz-Target: <Service>.<Operation>``, a JSON body, signed with AWS
Signature Version 4: :class:`SigV4Authentication` (the signature covers the body, read
first), the service's throttles, a renderer for ``application/x-amz-json-1.1``, and an
exception handler that answers every failure as AWS does — ``{"__type", "message"}`` with
``x-amzn-ErrorType``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from compat import sigv4
from core.errors import DATABASE_ERRORS, ApiError
from core.throttling import ScopedThrottle, UserThrottle

CONTENT_TYPE = "application/x-amz-json-1.1"


class AwsError(Exception):
    """An error in AWS's terms: its ``__type``, a message, the HTTP status."""

    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


# PMR's error codes, in Rekognition's terms.
_FROM_API_ERRORS = {
    "empty_file": "InvalidImageFormatException", "not_an_image": "InvalidImageFormatException",
    "corrupt_image": "InvalidImageFormatException",
    "unsupported_media_type": "InvalidImageFormatException",
    "too_large": "ImageTooLargeException", "invalid_parameters": "InvalidParameterException",
    "not_a_video": "InvalidParameterException", "corrupt_video": "InvalidParameterException",
    "invalid_video": "InvalidParameterException",
    "throttled": "ProvisionedThroughputExceededException",
    "too_many_active_jobs": "LimitExceededException",
}


def translate(exc: ApiError, *, video: bool = False) -> AwsError:
    """A PMR error as Rekognition names it (a video's input errors are parameter errors)."""
    kind = _FROM_API_ERRORS.get(exc.code)
    if video and kind in ("InvalidImageFormatException", "ImageTooLargeException"):
        kind = "InvalidParameterException"
    if kind is None:
        return AwsError("InternalServerError", exc.message, 500)
    return AwsError(kind, exc.message)


def aws_exception_handler(exc, context) -> Response | None:
    if isinstance(exc, ApiError):
        exc = translate(exc)
    elif isinstance(exc, exceptions.Throttled):
        exc = AwsError("ProvisionedThroughputExceededException",
                       "The request rate exceeds your limits for this operation.")
    elif isinstance(exc, exceptions.NotAuthenticated):
        exc = AwsError("MissingAuthenticationTokenException", "Missing Authentication Token")
    elif isinstance(exc, DATABASE_ERRORS):
        exc = AwsError("InternalServerError", "the service is unavailable; retry", 500)
    if not isinstance(exc, AwsError):
        return None  # a bug: the service's 500 handler
    return Response({"__type": exc.error_type, "message": exc.message}, status=exc.status,
                    headers={"x-amzn-ErrorType": exc.error_type})


class AwsJsonRenderer(JSONRenderer):
    media_type = CONTENT_TYPE
    charset = None


class AwsJsonOnly(BaseContentNegotiation):
    """The SDKs send no useful Accept header: the protocol decides."""

    def select_parser(self, request, parsers):
        return None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class SigV4Authentication(BaseAuthentication):
    """The AWS credential that signed the request (its PMR user)."""

    service = ""

    def authenticate(self, request):
        if request.method != "POST":
            return None
        try:
            credential = sigv4.verify(request, service=self.service)
        except sigv4.SignatureError as exc:
            raise AwsError(exc.error_type, exc.message) from None
        return credential.user, credential


class Signed(BasePermission):
    def has_permission(self, request, view) -> bool:
        return request.method != "POST" or bool(request.user and request.user.is_authenticated)


class AwsJsonView(APIView):
    """One endpoint, many operations: ``operations`` maps each name to a function of
    (body, user) returning the answer's JSON."""

    target_prefix = ""
    operations: dict[str, Callable[[dict, object], dict]] = {}
    submitting: frozenset[str] = frozenset()  # also counted against the upload rate
    permission_classes = [Signed]
    parser_classes = []
    renderer_classes = [AwsJsonRenderer]
    content_negotiation_class = AwsJsonOnly
    operation = ""

    def get_exception_handler(self):
        return aws_exception_handler

    @property
    def throttle_scope(self) -> str:
        return "detect" if self.operation in self.submitting else ""

    def get_throttles(self):
        if self.request.method != "POST":
            return []
        # Operations that submit work count against the upload ("detect") rate as well as
        # the per-user one; reads (polled while a video runs) only against the per-user one.
        return [UserThrottle(), ScopedThrottle()]

    def initial(self, request, *args, **kwargs):
        # As AWS answers: the operation is checked first, then the body's size, then the
        # signature (which covers the body), then the rates.
        target = request.headers.get("X-Amz-Target", "")
        if target or request.method != "GET":
            if request.method != "POST":
                raise AwsError("UnknownOperationException", "use POST")
            if not target.startswith(self.target_prefix):
                raise AwsError("UnknownOperationException",
                               f"expected X-Amz-Target: {self.target_prefix}<Operation>")
            self.operation = target[len(self.target_prefix):]
            if self.operation not in self.operations:
                raise AwsError("UnknownOperationException",
                               f"{target} is not supported by PMR (see its README)")
            try:
                request.body  # noqa: B018 - read now: the signature covers it
            except RequestDataTooBig:
                raise AwsError("ImageTooLargeException", "the request is larger than "
                               f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes") from None
        super().initial(request, *args, **kwargs)

    def get(self, request, *args, **kwargs):
        """Without X-Amz-Target: where the service's own API is."""
        return JsonResponse({"service": "PMR", "api": request.build_absolute_uri("/api/"),
                             "docs": request.build_absolute_uri("/api/docs/"),
                             "rekognition": f"POST with X-Amz-Target: {self.target_prefix}<Op>"})

    def post(self, request, *args, **kwargs):
        try:
            body = json.loads(request.body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AwsError("SerializationException", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise AwsError("SerializationException", "the body is not a JSON object")
        return Response(self.operations[self.operation](body, request.user))
