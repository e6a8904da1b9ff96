"""Bad and unusual images: a clear error or a correct result, never a crash."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from engine.image import ImageError, decode_image


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def dog(darknet_dir) -> Image.Image:
    return Image.open(darknet_dir / "dog.jpg").convert("RGB")


def labels(detector, array: np.ndarray) -> set[str]:
    return {d.label for d in detector.detect([array])[0]}


@pytest.mark.parametrize(("data", "code"), [
    (b"", "empty"),
    (b"hello, I am a text file\n", "not_an_image"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not_an_image"),
])
def test_non_images_are_clear_errors(data, code):
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.code == code


def test_a_truncated_jpeg_is_a_clear_error(darknet_dir):
    data = (darknet_dir / "dog.jpg").read_bytes()
    with pytest.raises(ImageError) as info:
        decode_image(data[: len(data) // 2])
    assert info.value.code == "corrupt"


def test_a_truncated_png_is_a_clear_error(dog):
    data = encode(dog)
    with pytest.raises(ImageError) as info:
        decode_image(data[: len(data) // 3])
    assert info.value.code == "corrupt"


def test_a_decompression_bomb_is_refused_before_it_is_decoded():
    # A valid PNG header claiming 100000 x 100000 pixels, and almost no data.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.code == "too_large"


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "CMYK", "I;16", "I"])
def test_every_pixel_format_decodes_to_rgb(dog, mode):
    if mode in ("I;16", "I"):
        gray = np.asarray(dog.convert("L"), dtype=np.uint16) * 257  # 16-bit full range
        image = Image.fromarray(gray.astype(np.uint16 if mode == "I;16" else np.int32))
    else:
        image = dog.convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I") else "PNG"
    array = decode_image(encode(image, fmt))
    assert array.shape == (576, 768, 3) and array.dtype == np.uint8


def test_alpha_is_dropped_and_does_not_change_detections(tiny_fp32, dog):
    rgba = dog.copy()
    rgba.putalpha(Image.new("L", dog.size, 0))  # fully transparent
    assert labels(tiny_fp32, decode_image(encode(rgba))) == labels(tiny_fp32, np.asarray(dog))


def test_sixteen_bit_gray_detects_like_eight_bit_gray(tiny_fp32, dog):
    gray8 = dog.convert("L")
    gray16 = Image.fromarray(np.asarray(gray8, dtype=np.uint16) * 257)
    assert gray16.mode.startswith("I")
    decoded16 = decode_image(encode(gray16))
    decoded8 = decode_image(encode(gray8))
    np.testing.assert_array_equal(decoded16, decoded8)
    assert "dog" in labels(tiny_fp32, decoded8)


def test_palette_images_detect_like_their_rgb(tiny_fp32, dog):
    palette = dog.quantize(256)
    assert "dog" in labels(tiny_fp32, decode_image(encode(palette)))


def test_a_one_pixel_image_gives_a_result(tiny_fp32):
    array = decode_image(encode(Image.new("RGB", (1, 1), (200, 30, 30))))
    result = tiny_fp32.detect([array])
    assert result == [[]] or all(0 <= d.x1 <= d.x2 <= 1 for d in result[0])


@pytest.mark.slow
def test_a_10000_by_10000_image_gives_a_correct_result(tiny_fp32, dog):
    big = Image.new("RGB", (10_000, 10_000), (128, 128, 128))
    big.paste(dog.resize((7680, 5760)), (1160, 2120))
    array = decode_image(encode(big, "JPEG", quality=80))
    assert array.shape == (10_000, 10_000, 3)
    found = tiny_fp32.detect([array])[0]
    dogs = [d for d in found if d.label == "dog"]
    assert dogs, [d.label for d in found]
    # dog.jpg's dog sits at about (129, 186)-(370, 517): x10 and shifted by the paste.
    best = max(dogs, key=lambda d: d.confidence)
    assert 1160 + 1290 - 400 < best.x1 < 1160 + 1290 + 400
    assert 2120 + 5170 - 400 < best.y2 < 2120 + 5170 + 400


def test_images_just_over_the_pixel_limit_are_refused():
    data = encode(Image.new("L", (10_001, 10_000)))
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.code == "too_large"


@pytest.mark.parametrize("array", [
    np.zeros((10, 10), dtype=np.uint8),
    np.zeros((10, 10, 4), dtype=np.uint8),
    np.zeros((10, 10, 3), dtype=np.float32),
])
def test_the_detector_refuses_arrays_that_are_not_rgb_uint8(tiny_fp32, array):
    with pytest.raises(ValueError, match="uint8"):
        tiny_fp32.detect([array])


@pytest.mark.parametrize(("options", "message"), [
    ({"min_confidence": 1.5}, "min_confidence"), ({"min_confidence": -0.1}, "min_confidence"),
    ({"iou_threshold": 0}, "iou_threshold"), ({"max_detections": 0}, "max_detections"),
    ({"classes": ["unicorn"]}, "unknown classes: unicorn"), ({"classes": [80]}, "unknown classes"),
])
def test_bad_options_are_clear_errors(tiny_fp32, dog, options, message):
    with pytest.raises(ValueError, match=message):
        tiny_fp32.detect([np.asarray(dog)], **options)
