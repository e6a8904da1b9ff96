"""GET /api/: where everything is (no token needed; the endpoints it names need one)."""

from __future__ import annotations

from django.http import JsonResponse
from django.urls import reverse

from core.errors import error_body


def api_index(request) -> JsonResponse:
    if request.method != "GET":
        return JsonResponse(error_body("method_not_allowed", f"{request.method} is not "
                                       "allowed here; use GET"), status=405)

    def url(name: str) -> str:
        return request.build_absolute_uri(reverse(name))

    return JsonResponse({
        "service": "PMR",
        "authentication": "Authorization: Token <token>",
        "endpoints": {"detect_image": url("detect-image"), "detect_video": url("detect-video"),
                      "jobs": url("job-list"), "models": url("model-list"),
                      "schema": url("schema"), "docs": url("docs")},
    })
