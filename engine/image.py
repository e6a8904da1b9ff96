"""Decoding image files into RGB arrays, with errors that say what is wrong."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# 10000 x 10000: large enough for any camera, small enough for a worker's memory.
DEFAULT_MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """An input that is not a decodable image; ``code`` says which way it failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def decode_image(source: bytes | str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file (bytes or a path) into an (H, W, 3) uint8 RGB array.

    Alpha is dropped (as darknet's loader does), palette and grayscale images are
    expanded, 16-bit samples are scaled to 8 bits. EXIF orientation is not applied:
    boxes refer to the stored pixel grid.
    """
    if isinstance(source, (str, Path)):
        try:
            source = Path(source).read_bytes()
        except OSError as exc:
            raise ImageError("unreadable", f"cannot read file: {exc.strerror or exc}") from exc
    if not source:
        raise ImageError("empty", "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source))
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageError("corrupt", f"the image claims a size of {width}x{height}")
            if width * height > max_pixels:
                raise ImageError("too_large", f"the image is {width}x{height} pixels, more than "
                                              f"the {max_pixels} allowed")
            image.load()
            return _to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not_an_image", "the file is not an image in a known format") from None
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as exc:
        raise ImageError("corrupt", f"the image data is corrupt or truncated: {exc}") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: scale 0..65535 to 0..255.
        samples = np.asarray(image, dtype=np.int64)
        gray = (np.clip(samples, 0, 65535) * 255 + 32767) // 65535
        return np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0, 255)
        return np.repeat(gray.round().astype(np.uint8)[:, :, None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)
