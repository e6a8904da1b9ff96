"""darknet ``.weights`` files: read, write, and random ones for tests and timing.

Layout (darknet ``src/parser.c``): a header of int32 major, minor, revision, then
``seen`` — 64-bit when ``major * 10 + minor >= 2``, 32-bit before — then, for each
convolutional layer in cfg order: biases, [BN scales, rolling mean, rolling variance]
when the layer has batch norm, then the kernel in (out, in / groups, k, k) order.
Every value is a little-endian float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cfg import ConvSpec, NetworkSpec, YoloSpec, input_channels

_FLOAT = np.dtype("<f4")


class WeightsError(ValueError):
    """A weights file that does not fit its cfg."""


@dataclass(frozen=True)
class ConvWeights:
    biases: np.ndarray
    weights: np.ndarray
    scales: np.ndarray | None = None
    rolling_mean: np.ndarray | None = None
    rolling_variance: np.ndarray | None = None


@dataclass(frozen=True)
class WeightsHeader:
    major: int
    minor: int
    revision: int
    seen: int

    @property
    def seen_is_64bit(self) -> bool:
        return self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000


def conv_shapes(spec: NetworkSpec) -> list[tuple[ConvSpec, int]]:
    """Each conv layer's spec with its number of input channels, in file order."""
    return [(layer, channels) for layer, channels in zip(spec.layers, input_channels(spec),
                                                          strict=True)
            if isinstance(layer, ConvSpec)]


def _conv_sizes(conv: ConvSpec, in_channels: int) -> list[tuple[str, int]]:
    n = conv.filters
    sizes = [("biases", n)]
    if conv.batch_normalize:
        sizes += [("scales", n), ("rolling_mean", n), ("rolling_variance", n)]
    sizes.append(("weights", n * (in_channels // conv.groups) * conv.size * conv.size))
    return sizes


def expected_size(spec: NetworkSpec, header: WeightsHeader) -> int:
    header_bytes = 12 + (8 if header.seen_is_64bit else 4)
    floats = sum(size for conv, c in conv_shapes(spec) for _, size in _conv_sizes(conv, c))
    return header_bytes + 4 * floats


def read_header(data: bytes | memoryview, path: str = "<weights>") -> tuple[WeightsHeader, int]:
    if len(data) < 16:
        raise WeightsError(f"{path}: {len(data)} bytes is too short for a darknet weights header")
    major, minor, revision = np.frombuffer(data, "<i4", 3, 0).tolist()
    probe = WeightsHeader(major, minor, revision, 0)
    if probe.seen_is_64bit:
        if len(data) < 20:
            raise WeightsError(f"{path}: too short for a darknet weights header")
        seen = int(np.frombuffer(data, "<u8", 1, 12)[0])
        return WeightsHeader(major, minor, revision, seen), 20
    return WeightsHeader(major, minor, revision, int(np.frombuffer(data, "<u4", 1, 12)[0])), 16


def read_darknet_weights(path: str | Path,
                         spec: NetworkSpec) -> tuple[WeightsHeader, list[ConvWeights]]:
    """Read a weights file for ``spec``; the file must be consumed exactly."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights: {exc}") from exc
    header, offset = read_header(data, str(path))
    need = expected_size(spec, header)
    if len(data) != need:
        verdict = "too short" if len(data) < need else "has bytes left over"
        raise WeightsError(
            f"{path}: {len(data)} bytes but {spec.path} needs exactly {need}: the file is "
            f"{verdict} ({abs(len(data) - need)} bytes) — weights for another cfg?")
    blocks = []
    for conv, in_channels in conv_shapes(spec):
        arrays = {}
        for name, size in _conv_sizes(conv, in_channels):
            arrays[name] = np.frombuffer(data, _FLOAT, size, offset).astype(np.float32)
            offset += 4 * size
        blocks.append(ConvWeights(**arrays))
    return header, blocks


def write_darknet_weights(path: str | Path, spec: NetworkSpec, blocks: list[ConvWeights],
                          header: WeightsHeader = WeightsHeader(0, 2, 0, 0)) -> None:
    """Write ``blocks`` for ``spec`` in darknet's format."""
    shapes = conv_shapes(spec)
    if len(shapes) != len(blocks):
        raise WeightsError(f"{len(blocks)} weight blocks for {len(shapes)} conv layers")
    with Path(path).open("wb") as stream:
        stream.write(np.array([header.major, header.minor, header.revision], "<i4").tobytes())
        seen_type = "<u8" if header.seen_is_64bit else "<u4"
        stream.write(np.array([header.seen], seen_type).tobytes())
        for (conv, in_channels), block in zip(shapes, blocks, strict=True):
            for name, size in _conv_sizes(conv, in_channels):
                array = getattr(block, name)
                if array is None or array.size != size:
                    raise WeightsError(f"conv at line {conv.line}: '{name}' needs {size} values")
                stream.write(np.ascontiguousarray(array, _FLOAT).tobytes())


def random_darknet_weights(spec: NetworkSpec, seed: int = 0,
                           objectness_bias: float | None = None) -> list[ConvWeights]:
    """Plausible random weights: LeCun-scaled kernels, BN statistics near identity.

    Useful for timing and for parity tests of cfgs whose official weights are not at hand.
    (He scaling would make the 23 residual additions of yolov3 overflow float32.) With
    ``objectness_bias`` (e.g. -6), the convolutions feeding YOLO heads get that bias on
    their objectness outputs, so that, as with trained weights, few boxes pass a
    threshold: timings then include a realistic amount of decoding and NMS.
    """
    rng = np.random.default_rng(seed)
    heads = {index - 1: layer for index, layer in enumerate(spec.layers)
             if isinstance(layer, YoloSpec)}
    conv_index = [index for index, layer in enumerate(spec.layers) if isinstance(layer, ConvSpec)]
    blocks = []
    for position, (conv, in_channels) in enumerate(conv_shapes(spec)):
        n = conv.filters
        fan_in = (in_channels // conv.groups) * conv.size * conv.size
        kernel = rng.normal(0.0, np.sqrt(1.0 / fan_in), n * fan_in).astype(np.float32)
        block = ConvWeights(biases=rng.normal(0.0, 0.1, n).astype(np.float32), weights=kernel)
        if conv.batch_normalize:
            block = ConvWeights(
                biases=block.biases, weights=kernel,
                scales=rng.uniform(0.5, 1.5, n).astype(np.float32),
                rolling_mean=rng.normal(0.0, 0.1, n).astype(np.float32),
                rolling_variance=rng.uniform(0.5, 2.0, n).astype(np.float32))
        head = heads.get(conv_index[position])
        if objectness_bias is not None and head is not None:
            block.biases[4::5 + head.classes] = objectness_bias  # one per anchor
        blocks.append(block)
    return blocks
