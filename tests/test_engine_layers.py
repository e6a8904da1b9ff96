"""darknet's layers reproduced exactly: maxpool padding that never wins the max, every
activation, the fork's grouped routes, partial shortcuts and YOLO heads, and both
darknets' batch norms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.cfg import ACTIVATIONS, ConvSpec, MaxpoolSpec, YoloSpec
from engine.model import (
    ACTIVATION_FUNCTIONS,
    Conv,
    Maxpool,
    Yolo,
    activate,
    route_group,
    shortcut_sum,
)
from engine.weights import ConvWeights


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


# --- activations: each one against darknet's formula (activations.h), element by element

def _softplus(x: float, threshold: float = 20) -> float:
    if x > threshold:
        return x
    if x < -threshold:
        return math.exp(x)
    return math.log(math.exp(x) + 1)


def _stair(x: float) -> float:
    n = math.floor(x)
    if int(math.fmod(n, 2)) == 0:  # C's %: -3 % 2 == -1
        return math.floor(x / 2)
    return (x - n) + math.floor(x / 2)


def _logistic(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x > -700 else 0.0


DARKNET_FORMULAS = {
    "linear": lambda x: x,
    "logistic": _logistic,
    "loggy": lambda x: 2 * _logistic(x) - 1,
    "relu": lambda x: x * (x > 0),
    "relu6": lambda x: min(max(x, 0), 6),
    "elu": lambda x: (x >= 0) * x + (x < 0) * (math.exp(x) - 1) if x < 80 else x,
    "selu": lambda x: ((x >= 0) * 1.0507 * x + (x < 0) * 1.0507 * 1.6732 * (math.exp(x) - 1)
                       if x < 80 else 1.0507 * x),
    "gelu": lambda x: 0.5 * x * (1 + math.tanh(0.797885 * x + 0.035677 * x ** 3)),
    "relie": lambda x: x if x > 0 else 0.01 * x,
    "ramp": lambda x: x * (x > 0) + 0.1 * x,
    "leaky": lambda x: x if x > 0 else 0.1 * x,
    "revleaky": lambda x: x if x > 0 else 0.1 * x,
    "tanh": lambda x: 2 / (1 + math.exp(-2 * x)) - 1 if x > -300 else -1.0,
    "plse": lambda x: .01 * (x + 4) if x < -4 else .01 * (x - 4) + 1 if x > 4 else .125 * x + .5,
    "stair": _stair,
    "hardtan": lambda x: -1 if x < -1 else 1 if x > 1 else x,
    "lhtan": lambda x: .001 * x if x < 0 else .001 * (x - 1) + 1 if x > 1 else x,
    "swish": lambda x: x * _logistic(x),
    "mish": lambda x: x * math.tanh(_softplus(x)),
    "hard_mish": lambda x: x if x > 0 else x * x / 2 + x if x > -2 else 0,
}
ACTIVATION_INPUTS = np.concatenate([
    np.linspace(-30, 30, 1201), [-4, 4, -2, -1, 0, 1, 2, 6, -20.5, 20.5, -0.5, 2.5, -3.25],
]).astype(np.float32)


def test_every_cfg_activation_has_an_implementation():
    assert set(ACTIVATIONS) == set(ACTIVATION_FUNCTIONS)
    assert set(DARKNET_FORMULAS) | set(NORMALIZE_FORMULAS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(DARKNET_FORMULAS))
def test_activation_matches_darknets_formula(name):
    x = torch.from_numpy(ACTIVATION_INPUTS.copy()).view(1, -1, 1, 1)
    ours = activate(x.clone(), name).flatten().numpy()
    expected = np.array([DARKNET_FORMULAS[name](float(v)) for v in ACTIVATION_INPUTS],
                        dtype=np.float64)
    np.testing.assert_allclose(ours, expected, rtol=5e-7, atol=5e-7)


def _normalize_channels(x: np.ndarray, softmax: bool, subtract_max: bool) -> np.ndarray:
    """activate_array_normalize_channels(_softmax): per pixel, over the channels."""
    batch, channels, height, width = x.shape
    out = np.empty_like(x, dtype=np.float64)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                values = [float(x[b, k, i, j]) for k in range(channels)]
                if not softmax:
                    total = 0.0001 + sum(v for v in values if v > 0)
                    out[b, :, i, j] = [v / total if v > 0 else 0 for v in values]
                    continue
                top = max(values) if subtract_max else 0.0
                total = 0.0001 + sum(math.exp(v - top) for v in values)
                out[b, :, i, j] = [math.exp(v - top) / total for v in values]
    return out


NORMALIZE_FORMULAS = {
    "normalize_channels": lambda x: _normalize_channels(x, False, False),
    "normalize_channels_softmax": lambda x: _normalize_channels(x, True, False),
    "normalize_channels_softmax_maxval": lambda x: _normalize_channels(x, True, True),
}


@pytest.mark.parametrize("name", sorted(NORMALIZE_FORMULAS))
def test_channel_normalizations_match_darknet(name):
    x = np.random.default_rng(4).normal(0, 2, (2, 7, 3, 5)).astype(np.float32)
    ours = activate(torch.from_numpy(x.copy()), name).numpy()
    np.testing.assert_allclose(ours, NORMALIZE_FORMULAS[name](x), rtol=1e-5, atol=1e-7)


# --- the fork's layers, against transliterations of its C on flat CHW arrays ----------

def darknet_route(inputs: list[np.ndarray], groups: int, group_id: int) -> np.ndarray:
    """forward_route_layer for one image: of each input, the group_id-th contiguous part."""
    parts = []
    for flat in (x.ravel() for x in inputs):
        part = flat.size // groups
        parts.append(flat[part * group_id:part * (group_id + 1)])
    return np.concatenate(parts)


@pytest.mark.parametrize(("groups", "group_id"), [(1, 0), (2, 0), (2, 1), (4, 3)])
def test_route_groups_take_darknets_slice(groups, group_id):
    rng = np.random.default_rng(groups * 10 + group_id)
    inputs = [rng.normal(size=(1, c, 5, 6)).astype(np.float32) for c in (8, 4)]
    parts = [route_group(torch.from_numpy(x), groups, group_id) for x in inputs]
    ours = torch.cat(parts, dim=1).numpy()
    np.testing.assert_array_equal(ours.ravel(), darknet_route(inputs, groups, group_id))


def darknet_shortcut(x: np.ndarray, sources: list[np.ndarray]) -> np.ndarray:
    """shortcut_multilayer_cpu without weights, for one image: out[i] = in[i] plus each
    source's value at the same flat index, where the source has one."""
    out = x.ravel().astype(np.float32).copy()
    for source in (s.ravel() for s in sources):
        for index in range(out.size):
            if index < source.size:
                out[index] += source[index]
    return out


@pytest.mark.parametrize("source_channels", [[6], [3], [9], [6, 2]])
def test_shortcut_adds_the_channels_both_have(source_channels):
    rng = np.random.default_rng(sum(source_channels))
    x = rng.normal(size=(1, 6, 4, 5)).astype(np.float32)
    sources = [rng.normal(size=(1, c, 4, 5)).astype(np.float32) for c in source_channels]
    ours = shortcut_sum(torch.from_numpy(x), [torch.from_numpy(s) for s in sources]).numpy()
    assert ours.shape == x.shape
    np.testing.assert_allclose(ours.ravel(), darknet_shortcut(x, sources), rtol=1e-6)


def darknet_yolo(raw: np.ndarray, spec: YoloSpec, net_w: int, net_h: int) -> np.ndarray:
    """forward_yolo_layer (CPU) then get_yolo_box / get_yolo_detections for one image:
    rows [x, y, w, h, objectness, class probabilities] in (anchor, y, x) order."""
    f32 = np.float32
    count, height, width = len(spec.anchors), raw.shape[1], raw.shape[2]
    output = raw.ravel().astype(f32).copy()
    cells = width * height
    stride = 4 + 1 + spec.classes

    def entry(n: int, entry: int) -> int:
        return n * cells * stride + entry * cells

    for n in range(count):
        box = entry(n, 0)
        if not spec.new_coords:
            output[box:box + 2 * cells] = 1 / (1 + np.exp(-output[box:box + 2 * cells]))
            obj = entry(n, 4)
            end = obj + (1 + spec.classes) * cells
            output[obj:end] = 1 / (1 + np.exp(-output[obj:end]))
        output[box:box + 2 * cells] = (output[box:box + 2 * cells] * f32(spec.scale_x_y)
                                       + f32(-0.5 * (spec.scale_x_y - 1)))
    rows = []
    for n in range(count):
        anchor_w, anchor_h = spec.anchors[n]
        for i in range(cells):
            row, col = divmod(i, width)
            value = [output[entry(n, e) + i] for e in range(stride)]
            if spec.new_coords:
                w = value[2] * value[2] * 4 * anchor_w / net_w
                h = value[3] * value[3] * 4 * anchor_h / net_h
            else:
                w = math.exp(value[2]) * anchor_w / net_w
                h = math.exp(value[3]) * anchor_h / net_h
            rows.append([(col + value[0]) / width, (row + value[1]) / height, w, h,
                         *value[4:]])
    return np.array(rows)


@pytest.mark.parametrize(("scale_x_y", "new_coords"), [(1.0, False), (1.05, False),
                                                       (2.0, True), (1.0, True)])
def test_yolo_heads_decode_as_darknet(scale_x_y, new_coords):
    spec = YoloSpec(line=1, classes=3, anchors=((12.0, 16.0), (19.0, 36.0)),
                    scale_x_y=scale_x_y, new_coords=new_coords)
    rng = np.random.default_rng(int(scale_x_y * 100) + new_coords)
    raw = rng.normal(size=(2 * 8, 5, 7)).astype(np.float32)
    if new_coords:  # the conv before such a head is logistic
        raw = 1 / (1 + np.exp(-raw))
    decoded = Yolo(spec).decode(torch.from_numpy(raw)[None], 224, 160)  # (1, A, H, W, 8)
    ours = decoded[0].reshape(-1, 8).numpy()
    np.testing.assert_allclose(ours, darknet_yolo(raw, spec, 224, 160), rtol=2e-6, atol=1e-6)


def test_grouped_convolutions_read_darknets_weight_layout():
    # darknet: group j's filters are the j-th n / groups, reading the j-th c / groups input
    # channels, each filter's (c / groups) x k x k weights contiguous.
    spec = ConvSpec(line=1, filters=6, size=3, stride=1, padding=1, groups=3,
                    batch_normalize=False, activation="linear")
    rng = np.random.default_rng(8)
    block = ConvWeights(biases=rng.normal(size=6).astype(np.float32),
                        weights=rng.normal(size=6 * 2 * 9).astype(np.float32))
    layer = Conv(spec, in_channels=6)
    layer.load(block)
    x = rng.normal(size=(1, 6, 5, 5)).astype(np.float32)
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    kernel = block.weights.reshape(6, 2, 3, 3)
    expected = np.empty((6, 5, 5), dtype=np.float64)
    for f in range(6):
        group = f // 2
        window = padded[2 * group:2 * group + 2]
        for i in range(5):
            for j in range(5):
                patch = window[:, i:i + 3, j:j + 3]
                expected[f, i, j] = (patch * kernel[f]).sum() + block.biases[f]
    with torch.inference_mode():
        np.testing.assert_allclose(layer(torch.from_numpy(x))[0].numpy(), expected, rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("fork", [False, True])
def test_batch_norm_is_folded_as_each_darknet_computes_it(fork):
    spec = ConvSpec(line=1, filters=5, size=1, stride=1, padding=0, groups=1,
                    batch_normalize=True, activation="linear")
    rng = np.random.default_rng(3)
    block = ConvWeights(biases=rng.normal(size=5).astype(np.float32),
                        weights=rng.normal(size=5 * 4).astype(np.float32),
                        scales=rng.uniform(0.5, 1.5, 5).astype(np.float32),
                        rolling_mean=rng.normal(size=5).astype(np.float32),
                        # small variances, where the two epsilons part ways
                        rolling_variance=rng.uniform(1e-5, 1e-4, 5).astype(np.float32))
    layer = Conv(spec, in_channels=4)
    layer.load(block, fork=fork)
    x = rng.normal(size=(4,)).astype(np.float64)
    raw = block.weights.reshape(5, 4).astype(np.float64) @ x
    variance = block.rolling_variance.astype(np.float64)
    # pjreddie's normalize_cpu: sqrt(var) + .000001f; the fork's: sqrt(var + .00001f).
    deviation = np.sqrt(variance + 1e-5) if fork else np.sqrt(variance) + 1e-6
    expected = (raw - block.rolling_mean) / deviation * block.scales + block.biases
    with torch.inference_mode():
        ours = layer(torch.from_numpy(x.astype(np.float32)).view(1, 4, 1, 1)).flatten().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
