"""Checking image uploads in the web process: by their content, cheaply, before anything is
kept.

Only headers are read here (format, dimensions): the pixels are decoded once, by the
worker. The file name and the client's Content-Type are never trusted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import filetype
from django.core.files.uploadedfile import UploadedFile
from PIL import Image, UnidentifiedImageError
from rest_framework import status

from core.errors import ApiError

# Pillow format -> (file extension, content type) for the formats PMR accepts.
IMAGE_FORMATS = {
    "JPEG": ("jpg", "image/jpeg"),
    "MPO": ("jpg", "image/jpeg"),  # multi-picture JPEG (many phone cameras)
    "PNG": ("png", "image/png"),
    "GIF": ("gif", "image/gif"),
    "BMP": ("bmp", "image/bmp"),
    "TIFF": ("tif", "image/tiff"),
    "WEBP": ("webp", "image/webp"),
    "PPM": ("ppm", "image/x-portable-anymap"),
}


@dataclass(frozen=True)
class ImageUpload:
    extension: str
    content_type: str
    width: int
    height: int


def inspect_image_upload(upload: UploadedFile, *, max_bytes: int, max_pixels: int) -> ImageUpload:
    """Classify an uploaded file from its bytes; raise ApiError with the right status."""
    if upload.size == 0:
        raise ApiError("empty_file", "the uploaded file is empty")
    if upload.size > max_bytes:
        raise ApiError("too_large", f"the file is {upload.size} bytes; the limit is {max_bytes}",
                       status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                       details={"max_bytes": max_bytes})
    upload.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(upload) as image:
                fmt, (width, height) = image.format, image.size
    except UnidentifiedImageError:
        raise _not_an_image(upload) from None
    except Image.DecompressionBombError:
        fmt, width, height = None, max_pixels + 1, 1
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ApiError("corrupt_image", f"the image header cannot be read: {exc}") from None
    finally:
        upload.seek(0)
    if width * height > max_pixels:
        raise ApiError("too_large", f"the image has {width * height} pixels; the limit is "
                       f"{max_pixels}", status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                       details={"max_pixels": max_pixels})
    if fmt not in IMAGE_FORMATS:
        raise ApiError("unsupported_media_type", f"{fmt} images are not supported",
                       status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                       details={"supported": sorted(IMAGE_FORMATS)})
    if width < 1 or height < 1:
        raise ApiError("corrupt_image", f"the image claims a size of {width}x{height}")
    extension, content_type = IMAGE_FORMATS[fmt]
    return ImageUpload(extension, content_type, width, height)


def _not_an_image(upload: UploadedFile) -> ApiError:
    upload.seek(0)
    kind = filetype.guess(upload.read(8192))
    upload.seek(0)
    if kind is not None and kind.mime in {mime for _, mime in IMAGE_FORMATS.values()}:
        # The signature of a format PMR reads, but Pillow cannot make sense of the rest.
        return ApiError("corrupt_image", f"the file starts like {kind.mime} but is not a "
                        "readable image")
    if kind is not None:
        return ApiError("unsupported_media_type",
                        f"the file is {kind.mime}, not an image format PMR reads",
                        status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                        details={"detected": kind.mime, "supported": sorted(IMAGE_FORMATS)})
    return ApiError("not_an_image", "the file is not an image")
