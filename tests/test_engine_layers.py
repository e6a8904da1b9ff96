"""darknet's maxpool, reproduced exactly: padding that never wins the max."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.cfg import MaxpoolSpec
from engine.model import Maxpool


def darknet_maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """A transliteration of darknet's forward_maxpool_layer (src/maxpool_layer.c)."""
    batch, channels, height, width = x.shape
    out_h = (height + padding - size) // stride + 1
    out_w = (width + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.empty((batch, channels, out_h, out_w), dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            best = np.full((batch, channels), -np.finfo(np.float32).max, dtype=x.dtype)
            for n in range(size):
                for m in range(size):
                    row, col = offset + i * stride + n, offset + j * stride + m
                    if 0 <= row < height and 0 <= col < width:
                        best = np.maximum(best, x[:, :, row, col])
            out[:, :, i, j] = best
    return out


@pytest.mark.parametrize(("size", "stride", "side"), [
    (2, 1, 13),  # yolov3-tiny's last maxpool: pads right/bottom only
    (2, 2, 26), (2, 2, 13),  # even and odd inputs
    (5, 1, 13), (9, 1, 13), (13, 1, 13),  # yolov3-spp's SPP block
    (3, 2, 12),
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_maxpool_matches_darknet(size, stride, side, channels_last):
    rng = np.random.default_rng(size * 100 + side)
    x = rng.normal(-1.0, 1.0, (2, 5, side, side)).astype(np.float32)  # mostly negative
    expected = darknet_maxpool(x, size, stride, size - 1)
    layer = Maxpool(MaxpoolSpec(line=1, size=size, stride=stride, padding=size - 1))
    tensor = torch.from_numpy(x)
    if channels_last:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(layer(tensor).numpy(), expected)


def test_zero_padding_would_not_be_exact():
    # The guard against a "simpler" implementation: on all-negative maps a zero pad wins.
    x = -np.ones((1, 1, 13, 13), dtype=np.float32)
    layer = Maxpool(MaxpoolSpec(line=1, size=2, stride=1, padding=1))
    result = layer(torch.from_numpy(x)).numpy()
    assert result.shape == (1, 1, 13, 13)
    assert (result == -1).all()
