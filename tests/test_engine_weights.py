"""The darknet weights loader: header versions, exact consumption, BN folding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.cfg import parse_cfg
from engine.model import DARKNET_BN_EPSILON, Conv
from engine.weights import (
    WeightsError,
    WeightsHeader,
    random_darknet_weights,
    read_darknet_weights,
    write_darknet_weights,
)


@pytest.fixture(scope="module")
def tiny_spec(darknet_dir):
    return parse_cfg(darknet_dir / "yolov3-tiny.cfg")


@pytest.mark.parametrize(("header", "header_bytes"), [
    (WeightsHeader(0, 2, 0, 2**40 + 7), 20),  # seen is 64-bit from version 0.2
    (WeightsHeader(0, 1, 0, 123456), 16),  # 32-bit before
])
def test_it_round_trips_both_header_versions(tmp_path, tiny_spec, header, header_bytes):
    blocks = random_darknet_weights(tiny_spec, seed=3)
    path = tmp_path / "w.weights"
    write_darknet_weights(path, tiny_spec, blocks, header)
    floats = sum(b.biases.size + b.weights.size + (3 * b.biases.size if b.scales is not None
                                                     else 0) for b in blocks)
    assert path.stat().st_size == header_bytes + 4 * floats
    read_header, read_blocks = read_darknet_weights(path, tiny_spec)
    assert read_header == header
    for written, read in zip(blocks, read_blocks, strict=True):
        for name in ("biases", "weights", "scales", "rolling_mean", "rolling_variance"):
            a, b = getattr(written, name), getattr(read, name)
            assert (a is None and b is None) or np.array_equal(a, b)


def test_the_official_tiny_weights_are_consumed_exactly(tiny_paths, tiny_spec):
    header, blocks = read_darknet_weights(tiny_paths.weights, tiny_spec)
    assert (header.major, header.minor) == (0, 2)
    assert len(blocks) == 13
    assert blocks[0].weights.shape == (16 * 3 * 3 * 3,)


def test_a_short_file_is_an_error_that_says_so(tmp_path, tiny_spec):
    path = tmp_path / "short.weights"
    write_darknet_weights(path, tiny_spec, random_darknet_weights(tiny_spec))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(WeightsError, match="too short"):
        read_darknet_weights(path, tiny_spec)


def test_bytes_left_over_are_an_error_that_says_so(tmp_path, tiny_spec):
    path = tmp_path / "long.weights"
    write_darknet_weights(path, tiny_spec, random_darknet_weights(tiny_spec))
    path.write_bytes(path.read_bytes() + b"\0" * 8)
    with pytest.raises(WeightsError, match="bytes left over"):
        read_darknet_weights(path, tiny_spec)


def test_weights_for_another_cfg_are_refused(tiny_paths, darknet_dir):
    with pytest.raises(WeightsError, match="another cfg"):
        read_darknet_weights(tiny_paths.weights, parse_cfg(darknet_dir / "yolov3.cfg"))


def test_a_header_only_file_is_refused(tmp_path, tiny_spec):
    path = tmp_path / "tiny.weights"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(WeightsError, match="too short for a darknet weights header"):
        read_darknet_weights(path, tiny_spec)


def test_folded_batch_norm_computes_what_darknet_computes(tiny_spec):
    conv_spec = tiny_spec.layers[2]  # 3x3, 16 -> 32, batch norm, leaky
    block = random_darknet_weights(tiny_spec, seed=5)[1]
    layer = Conv(conv_spec, 16)
    layer.load(block)
    x = torch.randn(2, 16, 20, 20)
    kernel = torch.from_numpy(block.weights).reshape(32, 16, 3, 3)
    raw = torch.nn.functional.conv2d(x, kernel, padding=1)
    # darknet: normalize_cpu, scale_bias, add_bias, then the activation
    mean = torch.from_numpy(block.rolling_mean).view(1, -1, 1, 1)
    std = torch.from_numpy(block.rolling_variance).sqrt().view(1, -1, 1, 1)
    scale = torch.from_numpy(block.scales).view(1, -1, 1, 1)
    bias = torch.from_numpy(block.biases).view(1, -1, 1, 1)
    expected = (raw - mean) / (std + DARKNET_BN_EPSILON) * scale + bias
    expected = torch.where(expected > 0, expected, 0.1 * expected)
    with torch.inference_mode():
        assert torch.allclose(layer(x), expected, atol=1e-4)
