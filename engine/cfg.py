"""Darknet ``.cfg`` parser: a pure function from text to typed layer specs.

Mirrors darknet's ``src/parser.c`` for the layer types YOLOv3 uses. Anything the
parser does not know — a section, a key, an activation — is an error that names the
file and line, so that a cfg for another darknet fork never half-loads.

Longer than most modules on purpose: one layer spec per darknet section type, each with
its options and checks, read side by side with ``parser.c``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ACTIVATIONS = ("leaky", "linear", "logistic", "relu")

# [net] keys that only matter for training: accepted and ignored.
_NET_TRAINING_KEYS = {
    "batch", "subdivisions", "momentum", "decay", "angle", "saturation", "exposure", "hue",
    "learning_rate", "burn_in", "max_batches", "policy", "steps", "scales", "power",
    "jitter", "aspect", "min_crop", "max_crop", "flip", "mosaic", "letter_box", "inputs",
    "max_chart_loss", "random",
}
_NET_KEYS = _NET_TRAINING_KEYS | {"width", "height", "channels"}

_SECTION_ALIASES = {
    "net": "net", "network": "net",
    "convolutional": "convolutional", "conv": "convolutional",
    "shortcut": "shortcut",
    "route": "route",
    "upsample": "upsample",
    "maxpool": "maxpool", "max": "maxpool",
    "yolo": "yolo",
}

_LAYER_KEYS = {
    "convolutional": {"batch_normalize", "filters", "size", "stride", "pad", "padding",
                      "activation", "groups"},
    "shortcut": {"from", "activation"},
    "route": {"layers"},
    "upsample": {"stride"},
    "maxpool": {"size", "stride", "padding"},
    # jitter..max only matter for training; accepted so that stock cfgs parse.
    "yolo": {"mask", "anchors", "classes", "num", "jitter", "ignore_thresh", "truth_thresh",
             "random", "max"},
}


class CfgError(ValueError):
    """A cfg file that cannot be built; the message names the file and line."""


@dataclass(frozen=True)
class ConvSpec:
    line: int
    filters: int
    size: int
    stride: int
    padding: int
    groups: int
    batch_normalize: bool
    activation: str


@dataclass(frozen=True)
class ShortcutSpec:
    line: int
    source: int  # absolute index of the layer added to the previous one
    activation: str


@dataclass(frozen=True)
class RouteSpec:
    line: int
    sources: tuple[int, ...]  # absolute layer indices, concatenated along channels


@dataclass(frozen=True)
class UpsampleSpec:
    line: int
    stride: int


@dataclass(frozen=True)
class MaxpoolSpec:
    line: int
    size: int
    stride: int
    padding: int  # total padding; darknet puts padding // 2 before and the rest after


@dataclass(frozen=True)
class YoloSpec:
    line: int
    classes: int
    anchors: tuple[tuple[float, float], ...]  # (w, h) in network-input pixels, masked


LayerSpec = ConvSpec | ShortcutSpec | RouteSpec | UpsampleSpec | MaxpoolSpec | YoloSpec


@dataclass(frozen=True)
class NetworkSpec:
    path: str
    width: int
    height: int
    channels: int
    layers: tuple[LayerSpec, ...] = field(default_factory=tuple)

    @property
    def classes(self) -> int:
        heads = [layer.classes for layer in self.layers if isinstance(layer, YoloSpec)]
        if not heads:
            return 0
        return heads[0]


@dataclass
class _Section:
    kind: str
    line: int
    options: dict[str, tuple[str, int]]  # key -> (raw value, line)


class _Reader:
    """Typed access to one section's options, with errors that point at the line."""

    def __init__(self, path: str, section: _Section) -> None:
        self.path = path
        self.section = section

    def error(self, message: str, line: int | None = None) -> CfgError:
        return CfgError(f"{self.path}:{line or self.section.line}: {message}")

    def _get(self, key: str, default: object, convert: Callable[[str], object]) -> object:
        if key not in self.section.options:
            if default is _REQUIRED:
                raise self.error(f"[{self.section.kind}] needs '{key}'")
            return default
        raw, line = self.section.options[key]
        try:
            return convert(raw)
        except ValueError:
            raise self.error(f"bad value for '{key}': {raw!r}", line) from None

    def as_int(self, key: str, default: object = None) -> int:
        return self._get(key, default, int)  # type: ignore[return-value]

    def as_ints(self, key: str, default: object = None) -> list[int]:
        return self._get(key, default, lambda raw: [int(v) for v in _split(raw)])  # type: ignore[return-value]

    def as_floats(self, key: str, default: object = None) -> list[float]:
        return self._get(key, default, lambda raw: [float(v) for v in _split(raw)])  # type: ignore[return-value]

    def activation(self, default: str) -> str:
        value = self._get("activation", default, str)
        if value not in ACTIVATIONS:
            line = self.section.options["activation"][1]
            supported = ", ".join(ACTIVATIONS)
            raise self.error(f"unsupported activation {value!r} (supported: {supported})", line)
        return value  # type: ignore[return-value]

    def line_of(self, key: str) -> int:
        return self.section.options[key][1] if key in self.section.options else self.section.line


_REQUIRED = object()


def _split(raw: str) -> list[str]:
    parts = [part.strip() for part in raw.split(",")]
    if any(not part for part in parts):
        raise ValueError(raw)
    return parts


def _read_sections(text: str, path: str) -> list[_Section]:
    sections: list[_Section] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise CfgError(f"{path}:{number}: malformed section header {line!r}")
            name = line[1:-1].strip()
            if name not in _SECTION_ALIASES:
                raise CfgError(f"{path}:{number}: unknown section [{name}]")
            sections.append(_Section(_SECTION_ALIASES[name], number, {}))
            continue
        if "=" not in line:
            raise CfgError(f"{path}:{number}: expected 'key=value', got {line!r}")
        if not sections:
            raise CfgError(f"{path}:{number}: option outside of any section")
        key, value = (part.strip() for part in line.split("=", 1))
        section = sections[-1]
        allowed = _NET_KEYS if section.kind == "net" else _LAYER_KEYS[section.kind]
        if key not in allowed:
            raise CfgError(f"{path}:{number}: unknown key '{key}' in [{section.kind}]")
        if key in section.options:
            raise CfgError(f"{path}:{number}: '{key}' given twice in [{section.kind}]")
        section.options[key] = (value, number)
    return sections


def parse_cfg_text(text: str, path: str = "<cfg>",
                   input_size: int | tuple[int, int] | None = None) -> NetworkSpec:
    """Parse darknet cfg text into a :class:`NetworkSpec`.

    ``input_size`` overrides the cfg's width/height (an int for a square input, or
    ``(width, height)``); each side must be a positive multiple of 32.
    """
    sections = _read_sections(text, path)
    if not sections or sections[0].kind != "net":
        raise CfgError(f"{path}:1: the first section must be [net]")
    net = _Reader(path, sections[0])
    width = net.as_int("width", _REQUIRED)
    height = net.as_int("height", _REQUIRED)
    channels = net.as_int("channels", 3)
    if input_size is not None:
        width, height = (input_size, input_size) if isinstance(input_size, int) else input_size
        for side in (width, height):
            if side <= 0 or side % 32:
                raise CfgError(f"{path}: input size must be a positive multiple of 32, got {side}")
    elif width <= 0 or height <= 0 or width % 32 or height % 32:
        raise net.error(f"width and height must be positive multiples of 32, got {width}x{height}")

    layers: list[LayerSpec] = []
    for index, section in enumerate(sections[1:]):
        reader = _Reader(path, section)
        layers.append(_build_layer(reader, index))
    if not any(isinstance(layer, YoloSpec) for layer in layers):
        raise CfgError(f"{path}: no [yolo] layer: not a YOLOv3 detector cfg")
    spec = NetworkSpec(path=path, width=width, height=height, channels=channels,
                       layers=tuple(layers))
    layer_shapes(spec)  # raises on layers that do not fit together
    return spec


def layer_shapes(spec: NetworkSpec) -> list[tuple[int, int, int]]:
    """The (channels, height, width) each layer outputs for one input image.

    Raises :class:`CfgError` (with the file and line) where layers do not fit together.
    """
    shapes: list[tuple[int, int, int]] = []
    shape = (spec.channels, spec.height, spec.width)
    for layer in spec.layers:
        shape = _output_shape(layer, shape, shapes, spec.path)
        shapes.append(shape)
    return shapes


def input_channels(spec: NetworkSpec) -> list[int]:
    """The number of channels each layer receives from the layer before it."""
    return [spec.channels] + [c for c, _, _ in layer_shapes(spec)[:-1]]


def _output_shape(layer: LayerSpec, shape: tuple[int, int, int],
                  shapes: list[tuple[int, int, int]], path: str) -> tuple[int, int, int]:
    channels, height, width = shape
    where = f"{path}:{layer.line}"
    if isinstance(layer, ConvSpec):
        if channels % layer.groups or layer.filters % layer.groups:
            raise CfgError(f"{where}: groups={layer.groups} does not divide the {channels} "
                           f"input channels and {layer.filters} filters")
        height = (height + 2 * layer.padding - layer.size) // layer.stride + 1
        width = (width + 2 * layer.padding - layer.size) // layer.stride + 1
        channels = layer.filters
    elif isinstance(layer, MaxpoolSpec):
        height = (height + layer.padding - layer.size) // layer.stride + 1
        width = (width + layer.padding - layer.size) // layer.stride + 1
    elif isinstance(layer, UpsampleSpec):
        height, width = height * layer.stride, width * layer.stride
    elif isinstance(layer, ShortcutSpec):
        if shapes[layer.source] != shape:
            raise CfgError(f"{where}: shortcut adds a {shapes[layer.source]} output to a "
                           f"{shape} one")
    elif isinstance(layer, RouteSpec):
        sizes = {shapes[i][1:] for i in layer.sources}
        if len(sizes) != 1:
            raise CfgError(f"{where}: route joins layers of different sizes {sorted(sizes)}")
        height, width = sizes.pop()
        channels = sum(shapes[i][0] for i in layer.sources)
    elif isinstance(layer, YoloSpec):
        expected = len(layer.anchors) * (5 + layer.classes)
        if channels != expected:
            raise CfgError(f"{where}: [yolo] with {len(layer.anchors)} anchors and "
                           f"{layer.classes} classes needs {expected} input channels, the layer "
                           f"before gives {channels}")
    if height <= 0 or width <= 0:
        raise CfgError(f"{where}: the input is too small for this layer")
    return channels, height, width


def parse_cfg(path: str | Path, input_size: int | tuple[int, int] | None = None) -> NetworkSpec:
    """Parse a darknet cfg file (see :func:`parse_cfg_text`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CfgError(f"{path}: cannot read cfg: {exc}") from exc
    return parse_cfg_text(text, str(path), input_size)


def _absolute(reader: _Reader, key: str, value: int, index: int) -> int:
    target = index + value if value < 0 else value
    if not 0 <= target < index:
        raise reader.error(f"'{key}' refers to layer {value}, which is not an earlier layer "
                           f"(this is layer {index})", reader.line_of(key))
    return target


def _build_layer(reader: _Reader, index: int) -> LayerSpec:
    kind = reader.section.kind
    line = reader.section.line
    if kind == "convolutional":
        size = reader.as_int("size", 1)
        pad = reader.as_int("pad", 0)
        padding = reader.as_int("padding", 0)
        if pad:
            padding = size // 2
        spec = ConvSpec(line=line, filters=reader.as_int("filters", 1), size=size,
                        stride=reader.as_int("stride", 1), padding=padding,
                        groups=reader.as_int("groups", 1),
                        batch_normalize=bool(reader.as_int("batch_normalize", 0)),
                        activation=reader.activation("logistic"))
        if spec.filters <= 0 or spec.size <= 0 or spec.stride <= 0 or spec.groups <= 0:
            raise reader.error("filters, size, stride and groups must be positive")
        return spec
    if kind == "shortcut":
        source = _absolute(reader, "from", reader.as_int("from", _REQUIRED), index)
        return ShortcutSpec(line=line, source=source, activation=reader.activation("linear"))
    if kind == "route":
        values = reader.as_ints("layers", _REQUIRED)
        return RouteSpec(line=line,
                         sources=tuple(_absolute(reader, "layers", v, index) for v in values))
    if kind == "upsample":
        stride = reader.as_int("stride", 2)
        if stride <= 0:
            raise reader.error("upsample stride must be positive")
        return UpsampleSpec(line=line, stride=stride)
    if kind == "maxpool":
        stride = reader.as_int("stride", 1)
        size = reader.as_int("size", stride)
        if stride <= 0 or size <= 0:
            raise reader.error("maxpool size and stride must be positive")
        return MaxpoolSpec(line=line, size=size, stride=stride,
                           padding=reader.as_int("padding", size - 1))
    if kind == "yolo":
        classes = reader.as_int("classes", 20)
        num = reader.as_int("num", 1)
        anchors = reader.as_floats("anchors", [])
        mask = reader.as_ints("mask", list(range(num)))
        if len(anchors) != 2 * num:
            raise reader.error(f"'anchors' has {len(anchors)} values, 'num={num}' needs {2 * num}",
                               reader.line_of("anchors"))
        if any(not 0 <= m < num for m in mask):
            raise reader.error(f"'mask' values must be in 0..{num - 1}", reader.line_of("mask"))
        pairs = tuple((anchors[2 * m], anchors[2 * m + 1]) for m in mask)
        if classes <= 0:
            raise reader.error("'classes' must be positive")
        return YoloSpec(line=line, classes=classes, anchors=pairs)
    raise reader.error(f"[{kind}] cannot be a layer")
