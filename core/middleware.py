"""Upload bodies: refused from their Content-Length when too large; read to the end when
refused early for another reason."""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse

from core.errors import error_body

# Room for the multipart envelope and the small form fields beside the file.
_ENVELOPE = 64 * 1024
# Endpoints whose clients expect another error shape than PMR's (DeepStack's).
_DEEPSTACK_PATHS = ("/v1/vision/",)


def upload_limit(path: str) -> int | None:
    """The upload limit of an endpoint (UPLOAD_LIMITS: a path, or a prefix ending in
    '/' for a family of them); None if it takes no upload."""
    limits = settings.UPLOAD_LIMITS
    exact = limits.get(path.rstrip("/"))
    if exact is not None:
        return exact
    return next((limit for prefix, limit in limits.items()
                 if prefix.endswith("/") and path.startswith(prefix)), None)


class UploadLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = upload_limit(request.path_info)
        if limit is not None and request.method == "POST":
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit + _ENVELOPE:
                message = f"the request is {length} bytes; the upload limit is {limit}"
                if request.path_info.startswith(_DEEPSTACK_PATHS):
                    return JsonResponse({"success": False, "error": message}, status=413)
                return JsonResponse(error_body("too_large", message, {"max_bytes": limit}),
                                    status=413)
        return self.get_response(request)


class DrainUnreadBodyMiddleware:
    """Read what is left of a request body the response did not need.

    A request refused before its upload was read (429, 401...) leaves the body in the
    socket; gunicorn then drops the kept-alive connection, and the client's next request
    on it fails with a reset. Reading the rest (up to the largest upload allowed) keeps
    the connection usable; a larger body is left, and its connection closed.
    """

    CHUNK = 256 * 1024

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if getattr(request, "_read_started", True):
            return response
        try:
            remaining = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return response
        if 0 < remaining <= max(settings.UPLOAD_LIMITS.values()) + _ENVELOPE:
            stream = request.META["wsgi.input"]
            while remaining > 0:
                chunk = stream.read(min(self.CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
        return response
