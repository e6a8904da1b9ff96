"""The model registry's API: upload a darknet model (staff), list the models and their
versions, choose the default version, delete. Checks and storage are ``jobs.catalog``'s."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApiError
from core.schema import ERROR_RESPONSES, ErrorSerializer
from jobs import catalog
from jobs.models import DetectorModel
from jobs.serializers import StrictSerializer

# Beside the API's errors: changes are for staff (403); a model in use is not deleted (409).
MODEL_ERRORS = {
    **ERROR_RESPONSES,
    403: OpenApiResponse(ErrorSerializer, description="only staff users may change models"),
    409: OpenApiResponse(ErrorSerializer, description="the model is in use or built in"),
}


class ModelUploadSerializer(StrictSerializer):
    name = serializers.CharField(max_length=64, help_text="the model's name, e.g. shelf-v2")
    cfg = serializers.FileField(help_text="the darknet .cfg")
    weights = serializers.FileField(allow_empty_file=True, help_text="the darknet .weights")
    names = serializers.FileField(allow_empty_file=True,
                                  help_text="class names, one per line (as darknet's .names)")
    input_size = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=32, max_value=4096,
        help_text="the network's input side, a multiple of 32 (default: the cfg's)")
    notes = serializers.CharField(required=False, allow_blank=True, default="",
                                  max_length=10_000)
    make_default = serializers.BooleanField(
        required=False, default=True,
        help_text="a new version becomes the default one (false: keep the default as is)")


class ModelVersionSerializer(serializers.Serializer):
    """One version of a model, as the API shows it."""

    def to_representation(self, model: DetectorModel) -> dict:
        request = self.context.get("request")
        url = f"/api/models/{model.ref}"
        return {
            "name": model.name, "version": model.version, "ref": model.ref,
            "default": model.is_default, "builtin": model.builtin,
            "classes": model.classes, "class_names": list(model.class_names),
            "input_size": {"width": model.input_width, "height": model.input_height},
            "resize": "letterbox" if model.letter_box else "stretch",
            "sha256": {"cfg": model.cfg_sha256, "weights": model.weights_sha256,
                       "names": model.names_sha256},
            "weights_bytes": model.weights_size, "notes": model.notes,
            "created_by": model.created_by.get_username() if model.created_by else None,
            "created_at": model.created_at.isoformat(),
            "url": request.build_absolute_uri(url) if request else url,
        }


def _model_summary(name: str, versions: list[DetectorModel], context: dict) -> dict:
    default = next((m.version for m in versions if m.is_default), None)
    return {"name": name, "default_version": default,
            "versions": [ModelVersionSerializer(m, context=context).data for m in versions]}


def _versions(name: str) -> list[DetectorModel]:
    if name in catalog.MODELS:
        catalog.register_builtin(name)
    return list(DetectorModel.objects.filter(name=name).select_related("created_by"))


class IsStaffToChange(permissions.BasePermission):
    """Reading the registry needs what the API needs; changing it needs a staff user."""

    message = "only staff users may add, change or delete models"

    def has_permission(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_staff)


class ModelListView(APIView):
    parser_classes = [MultiPartParser, FormParser]
    permission_classes = [permissions.IsAuthenticated, IsStaffToChange]

    @extend_schema(operation_id="list_models", responses={200: OpenApiResponse(
        description="every model with its versions"), **MODEL_ERRORS},
        summary="The models requests may name (model=NAME or NAME@VERSION)")
    def get(self, request):
        catalog.register_builtins()
        by_name: dict[str, list[DetectorModel]] = {}  # by name, newest version first
        for model in DetectorModel.objects.select_related("created_by"):
            by_name.setdefault(model.name, []).append(model)
        context = {"request": request}
        return Response({"models": [_model_summary(name, versions, context)
                                    for name, versions in by_name.items()]})

    @extend_schema(operation_id="add_model",
                   request={"multipart/form-data": ModelUploadSerializer},
                   responses={201: OpenApiResponse(description="a new version"),
                              200: OpenApiResponse(description="these files are a version "
                                                   "already: that version"),
                              **MODEL_ERRORS},
                   summary="Upload a darknet model (cfg, weights, names): staff only",
                   description="Parsed and checked before it is accepted: a cfg error names "
                               "its line; weights that do not fill the cfg say by how many "
                               "bytes; a names file must count the cfg's classes. Nothing "
                               "is stored unless every check passes.")
    def post(self, request):
        for field in ("cfg", "weights", "names"):
            if field not in request.FILES:
                raise ApiError("missing_file", f"send the model's {field} file as the "
                               f"multipart field {field!r}")
        total = sum(request.FILES[field].size or 0 for field in ("cfg", "weights", "names"))
        if total > settings.MAX_MODEL_UPLOAD_BYTES:
            raise ApiError("too_large", f"the files are {total} bytes; the limit is "
                           f"{settings.MAX_MODEL_UPLOAD_BYTES}", status_code=413,
                           details={"max_bytes": settings.MAX_MODEL_UPLOAD_BYTES})
        serializer = ModelUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        model, created = catalog.add_model(
            name=data["name"], cfg=data["cfg"], weights=data["weights"], names=data["names"],
            input_size=data["input_size"], user=request.user, notes=data["notes"],
            make_default=data["make_default"])
        body = {**ModelVersionSerializer(model, context={"request": request}).data,
                "created": created}
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
                        headers={"Location": body["url"]})


class DefaultVersionSerializer(StrictSerializer):
    default_version = serializers.IntegerField(min_value=1)


class ModelDetailView(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]
    permission_classes = [permissions.IsAuthenticated, IsStaffToChange]

    def _named(self, ref: str) -> tuple[str, int | None, list[DetectorModel]]:
        name, version = catalog.parse_ref(ref)
        versions = _versions(name)
        if version is not None:
            versions = [m for m in versions if m.version == version]
        if not versions:
            raise ApiError("not_found", f"no model {ref!r} (known: "
                           f"{', '.join(catalog.known_names())})", status_code=404)
        return name, version, versions

    @extend_schema(operation_id="get_model", responses={200: OpenApiResponse(
        description="NAME: the model and its versions; NAME@VERSION: that version"),
        **MODEL_ERRORS}, summary="A model's versions (and which is the default)")
    def get(self, request, ref: str):
        name, version, versions = self._named(ref)
        context = {"request": request}
        if version is not None:
            return Response(ModelVersionSerializer(versions[0], context=context).data)
        return Response(_model_summary(name, versions, context))

    @extend_schema(operation_id="set_default_model_version",
                   request=DefaultVersionSerializer,
                   responses={200: OpenApiResponse(description="the model and its versions"),
                              **MODEL_ERRORS},
                   summary="Choose the version a request naming only the model runs")
    def patch(self, request, ref: str):
        name, version, versions = self._named(ref)
        if version is not None:
            raise ApiError("invalid_parameters", "PATCH the model by its name, with "
                           "default_version", details={"model": "NAME, not NAME@VERSION"})
        serializer = DefaultVersionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        wanted = serializer.validated_data["default_version"]
        chosen = next((m for m in versions if m.version == wanted), None)
        if chosen is None:
            raise ApiError("invalid_parameters", f"{name} has no version {wanted} (versions: "
                           f"{', '.join(str(m.version) for m in versions)})")
        catalog.set_default(chosen)
        return Response(_model_summary(name, _versions(name), {"request": request}))

    @extend_schema(operation_id="delete_model", responses={204: None, **MODEL_ERRORS},
                   summary="Delete a model version (NAME@VERSION) or every version (NAME)",
                   description="Refused (409) while a job of it is queued or running, and "
                               "for the default version of the service's DETECTOR_MODEL.")
    def delete(self, request, ref: str):
        _, _, versions = self._named(ref)
        catalog.delete_models(versions)
        return Response(status=status.HTTP_204_NO_CONTENT)
