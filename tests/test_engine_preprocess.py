"""darknet's letterbox, reproduced exactly, and boxes mapped back to the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.preprocess import Letterbox, boxes_to_image, darknet_resize, letterbox


def darknet_resize_reference(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """A loop-for-loop transliteration of darknet's resize_image (src/image.c), float32."""
    f32 = np.float32
    channels, im_h, im_w = image.shape
    im = image.astype(f32) / f32(255)
    part = np.zeros((channels, im_h, w), dtype=f32)
    resized = np.zeros((channels, h, w), dtype=f32)
    w_scale = f32(im_w - 1) / f32(w - 1) if w > 1 else f32(0)
    h_scale = f32(im_h - 1) / f32(h - 1) if h > 1 else f32(0)
    for k in range(channels):
        for r in range(im_h):
            for c in range(w):
                if c == w - 1 or im_w == 1:
                    val = im[k, r, im_w - 1]
                else:
                    sx = f32(c) * w_scale
                    ix = int(sx)
                    dx = sx - f32(ix)
                    val = (f32(1) - dx) * im[k, r, ix] + dx * im[k, r, ix + 1]
                part[k, r, c] = val
    for k in range(channels):
        for r in range(h):
            sy = f32(r) * h_scale
            iy = int(sy)
            dy = sy - f32(iy)
            for c in range(w):
                resized[k, r, c] = (f32(1) - dy) * part[k, iy, c]
            if r == h - 1 or im_h == 1:
                continue
            for c in range(w):
                resized[k, r, c] += dy * part[k, iy + 1, c]
    return resized


@pytest.mark.parametrize(("source", "target"), [
    ((23, 31), (13, 17)),  # shrink
    ((7, 5), (16, 12)),  # enlarge
    ((1, 9), (4, 6)),  # one row
    ((9, 1), (6, 4)),  # one column
    ((40, 30), (40, 30)),  # same size
])
def test_resize_matches_darknet_bit_for_bit(source, target):
    rng = np.random.default_rng(sum(source) + sum(target))
    image = rng.integers(0, 256, (3, *source), dtype=np.uint8)
    expected = darknet_resize_reference(image, target[1], target[0])
    actual = darknet_resize(torch.from_numpy(image), target[1], target[0]).numpy()
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(("size", "placed"), [
    ((768, 576), (416, 312, 0, 52)),  # wider than tall: full width, centred vertically
    ((576, 768), (312, 416, 52, 0)),
    ((500, 500), (416, 416, 0, 0)),
    ((10000, 1), (416, 1, 0, 207)),  # never a zero-height resize
])
def test_letterbox_scales_and_centres_as_darknet(size, placed):
    box = Letterbox.fit(*size, 416, 416)
    assert (box.new_width, box.new_height, box.left, box.top) == placed


def test_letterbox_fills_the_border_with_half_gray():
    image = torch.zeros((3, 576, 768), dtype=torch.uint8)
    out = torch.empty((3, 416, 416))
    letterbox(image, Letterbox.fit(768, 576, 416, 416), out)
    assert torch.all(out[:, :52] == 0.5) and torch.all(out[:, 52 + 312:] == 0.5)
    assert torch.all(out[:, 52:52 + 312] == 0.0)


def test_boxes_map_back_to_original_pixels():
    box = Letterbox.fit(768, 576, 416, 416)  # scale 416/768, 52 px bars top and bottom
    # A box covering the image area of the letterboxed input is the whole image.
    whole = torch.tensor([[0.5, 0.5, 1.0, 312 / 416]])
    x1y1x2y2 = boxes_to_image(whole, torch.tensor([0]), [box])
    np.testing.assert_allclose(x1y1x2y2.numpy(), [[0, 0, 768, 576]], atol=1e-3)


def test_stretching_is_darknets_resize_to_the_whole_input():
    # The fork without letter_box=1: resize_image(im, net.w, net.h), no bars.
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (3, 45, 70), dtype=np.uint8)
    box = Letterbox.stretch(70, 45, 64, 32)
    assert (box.new_width, box.new_height, box.left, box.top) == (64, 32, 0, 0)
    out = torch.empty((3, 32, 64))
    letterbox(torch.from_numpy(image), box, out)
    np.testing.assert_array_equal(out.numpy(), darknet_resize_reference(image, 64, 32))


def test_stretched_boxes_scale_back_with_each_axis():
    # correct_yolo_boxes with letter=0 leaves the box relative to the image.
    box = Letterbox.stretch(768, 576, 416, 416)
    relative = torch.tensor([[0.5, 0.25, 0.2, 0.1]])
    x1y1x2y2 = boxes_to_image(relative, torch.tensor([0]), [box])
    np.testing.assert_allclose(x1y1x2y2.numpy(), [[307.2, 115.2, 460.8, 172.8]], rtol=1e-6)
