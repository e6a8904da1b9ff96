"""OpenAPI pieces shared by every endpoint: the one error body."""

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ErrorSerializer = inline_serializer(
    name="Error",
    fields={"error": inline_serializer(name="ErrorBody", fields={
        "code": serializers.CharField(),
        "message": serializers.CharField(),
        "details": serializers.JSONField(),
    })},
)

ERROR_RESPONSES = {
    code: OpenApiResponse(ErrorSerializer, description=text)
    for code, text in [
        (400, "bad input: missing file, not an image, corrupt image, invalid parameters"),
        (401, "no or bad credentials"),
        (404, "no such job (or not yours)"),
        (413, "the upload is too large"),
        (415, "unsupported media type"),
        (429, "too many requests: see Retry-After"),
    ]
}


def forbid_unknown_request_fields(result, generator, request, public):
    """drf-spectacular postprocessing hook: request bodies take no fields but their own
    (the API refuses unknown parameters; the schema says so)."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result
