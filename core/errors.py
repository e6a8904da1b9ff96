"""One error type and one error shape: ``{"error": {"code", "message", "details"}}``.

Every 4xx and 5xx the service sends — from the API, from Django itself (404, 500,
oversized bodies), from DRF (validation, auth, throttling) — has this body, so a
client needs one code path for failures and never sees an HTML error page.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error for the client: HTTP status, a stable machine-readable code, a message."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, message: str, *, status_code: int | None = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details if details is not None else {}
        if status_code is not None:
            self.status_code = status_code


def error_body(code: str, message: str, details: Any = None) -> dict:
    return {"error": {"code": code, "message": message,
                      "details": details if details is not None else {}}}


_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "malformed_request",
}


DATABASE_ERRORS = (OperationalError, InterfaceError)


def database_unavailable() -> tuple[dict, int, dict]:
    return (error_body("database_unavailable", "the database cannot be reached; try again "
                       "shortly", {"retry_after_s": 5}), 503, {"Retry-After": "5"})


def exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: everything becomes the one error shape."""
    headers: dict[str, str] = {}
    if isinstance(exc, ApiError):
        if exc.status_code in (429, 503):
            headers["Retry-After"] = str((exc.details or {}).get("retry_after_s", 5))
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code,
                        headers=headers)
    if isinstance(exc, DATABASE_ERRORS):
        logger.warning("database unavailable: %s", exc)
        body, status_code, headers = database_unavailable()
        return Response(body, status=status_code, headers=headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        return Response(error_body("too_large", str(exc) or "the request body is too large"),
                        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    elif isinstance(exc, SuspiciousOperation):
        return Response(error_body("bad_request", str(exc)), status=status.HTTP_400_BAD_REQUEST)

    if isinstance(exc, exceptions.ValidationError):
        return Response(error_body("invalid_parameters", "some parameters are not valid",
                                   _flatten(exc.detail)), status=exc.status_code)
    if isinstance(exc, exceptions.APIException):
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None) is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), None)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return Response(error_body(code or str(exc.get_codes()), detail),
                        status=exc.status_code, headers=headers)

    logger.exception("unhandled error in %s", context.get("view"))
    return Response(error_body("internal_error", "the server hit an unexpected error"),
                    status=status.HTTP_500_INTERNAL_SERVER_ERROR)


def _flatten(detail: Any) -> Any:
    """DRF's ErrorDetail lists -> plain messages, keyed by field."""
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        items = [_flatten(item) for item in detail]
        return items[0] if len(items) == 1 else items
    return str(detail)


class DatabaseUnavailableMiddleware:
    """Outside the API views (admin, probes...), a lost database is a 503, not a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, DATABASE_ERRORS):
            logger.warning("database unavailable: %s", exception)
            body, status_code, headers = database_unavailable()
            response = JsonResponse(body, status=status_code)
            for name, value in headers.items():
                response[name] = value
            return response
        return None


def json_error_view(status_code: int, code: str, message: str):
    """A Django handler (handler404, handler500...) answering in the one error shape."""

    def view(request, exception=None):
        return JsonResponse(error_body(code, message), status=status_code)

    return view
