"""Where a Rekognition call's image or video comes from: ``Bytes`` (base64 in the JSON
body) or an ``S3Object`` (the S3-compatible store PMR is configured with, or a local folder
standing in for buckets)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.files.storage import storages
from django.core.files.uploadedfile import TemporaryUploadedFile

from compat.aws import AwsError
from core.errors import ApiError

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Rekognition's limit for Image.Bytes


def parameter_error(message: str) -> AwsError:
    return AwsError("InvalidParameterException", message)


def object_source(s3_object: dict) -> tuple[str, Callable[[], BinaryIO]]:
    """(a name, an opener of a binary stream) for an S3Object: the S3-compatible store PMR
    is configured with, or a local folder standing in for buckets
    (REKOGNITION_BUCKETS_DIR/<bucket>/<key>). Nothing is read until the stream is."""
    bucket, key = s3_object.get("Bucket"), s3_object.get("Name")
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        raise parameter_error("S3Object needs Bucket and Name")
    if settings.STORAGE_BACKEND == "s3":
        client = storages["default"].connection.meta.client

        def open_object() -> BinaryIO:
            try:
                return client.get_object(Bucket=bucket, Key=key)["Body"]
            except Exception as exc:
                raise AwsError("InvalidS3ObjectException",
                               f"Unable to get object metadata from S3: {exc}") from None

        return key, open_object
    root = Path(settings.REKOGNITION_BUCKETS_DIR) if settings.REKOGNITION_BUCKETS_DIR else None
    if root is None:
        raise AwsError("InvalidS3ObjectException", "no object store is configured "
                       "(STORAGE_BACKEND=s3 or REKOGNITION_BUCKETS_DIR)")
    base = (root / bucket).resolve()
    path = (base / key).resolve()
    if not base.is_relative_to(root.resolve()) or not path.is_relative_to(base) \
            or not path.is_file():
        raise AwsError("InvalidS3ObjectException", "Unable to get object metadata from S3. "
                       "Check object key, region and/or access permissions.")
    return key, lambda: path.open("rb")


def read_at_most(open_stream: Callable[[], BinaryIO], limit: int) -> bytes:
    """The object's bytes, up to one past ``limit`` (enough to tell that it is too large)."""
    stream = open_stream()
    try:
        return stream.read(limit + 1)
    finally:
        stream.close()


def spooled_to_disk(name: str, open_stream: Callable[[], BinaryIO],
                     limit: int) -> TemporaryUploadedFile:
    """The object copied to a temporary file in chunks (never whole in memory); a 413
    past ``limit`` bytes, read no further."""
    upload = TemporaryUploadedFile(name, "application/octet-stream", 0, None)
    stream = open_stream()
    try:
        while chunk := stream.read(1 << 20):
            upload.size += len(chunk)
            if upload.size > limit:
                raise ApiError("too_large", f"the object is over {limit} bytes, the limit",
                               status_code=413, details={"max_bytes": limit})
            upload.write(chunk)
    except Exception:
        upload.close()
        raise
    finally:
        stream.close()
    upload.flush()
    upload.seek(0)
    return upload


def image_bytes(body: dict) -> tuple[str, bytes]:
    image = body.get("Image")
    if not isinstance(image, dict) or ("Bytes" in image) == ("S3Object" in image):
        raise parameter_error("Image needs exactly one of Bytes and S3Object")
    if "Bytes" in image:
        try:
            data = base64.b64decode(image["Bytes"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise parameter_error("Image.Bytes is not base64") from None
        name = "image"
    else:
        name, open_stream = object_source(image["S3Object"])
        data = read_at_most(open_stream, MAX_IMAGE_BYTES)
    if len(data) > MAX_IMAGE_BYTES:
        raise AwsError("ImageTooLargeException", f"Image size is too large: {len(data)} "
                       f"bytes, at most {MAX_IMAGE_BYTES}")
    if not data:
        raise AwsError("InvalidImageFormatException", "Request has invalid image format")
    return name, data
