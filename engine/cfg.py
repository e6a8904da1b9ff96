"""Darknet ``.cfg`` parser: a pure function from text to typed layer specs.

Mirrors the ``src/parser.c`` of both darknets for the layer types YOLO detectors use:
pjreddie's original (the YOLOv3 family) and the maintained fork, AlexeyAB/darknet
(YOLOv4, YOLOv7: more activations, grouped routes, ``scale_x_y``, ``new_coords``,
DIoU-NMS, ``letter_box``). Anything the parser does not know — a section, a key, an
activation — is an error that names the file and line, so that a cfg for another
darknet fork never half-loads.

Longer than most modules on purpose: one layer spec per darknet section type, each with
its options and checks, read side by side with ``parser.c``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Every activation a darknet convolution applies (the fork's activations.c), by cfg name.
ACTIVATIONS = (
    "linear", "logistic", "loggy", "relu", "relu6", "elu", "selu", "gelu", "relie", "ramp",
    "leaky", "revleaky", "tanh", "plse", "stair", "hardtan", "lhtan", "swish", "mish",
    "hard_mish", "normalize_channels", "normalize_channels_softmax",
    "normalize_channels_softmax_maxval",
)
# darknet's [shortcut] runs these through activate(), which has no case for them: the
# layer would output zeros. Only a convolution applies them.
CONV_ONLY_ACTIVATIONS = frozenset({"hard_mish", "normalize_channels",
                                   "normalize_channels_softmax",
                                   "normalize_channels_softmax_maxval"})
# What pjreddie's darknet knows; the others are the fork's.
_PJREDDIE_ACTIVATIONS = {"linear", "logistic", "loggy", "relu", "elu", "selu", "relie", "ramp",
                         "leaky", "tanh", "plse", "stair", "hardtan", "lhtan"}

# [yolo] nms_kind: darknet's do_nms_sort for "default", diounms_sort for the others.
NMS_KINDS = ("default", "greedynms", "diounms")

# [net] keys that only matter for training (or for darknet's own memory and GPU
# settings): accepted and ignored. From both darknets' parse_net_options.
_NET_TRAINING_KEYS = {
    "batch", "subdivisions", "momentum", "decay", "angle", "saturation", "exposure", "hue",
    "learning_rate", "burn_in", "max_batches", "policy", "steps", "scales", "power",
    "jitter", "aspect", "min_crop", "max_crop", "inputs", "random", "time_steps", "notruth",
    "adam", "B1", "B2", "eps", "max_ratio", "min_ratio", "center", "clip", "step", "scale",
    "gamma",
}
# The [net] keys only the fork reads (letter_box is the one inference uses).
_FORK_NET_KEYS = {
    "letter_box", "flip", "mosaic", "mosaic_bound", "max_chart_loss", "ema_alpha", "mixup",
    "cutmix", "blur", "gaussian_noise", "label_smooth_eps", "adversarial_lr", "attention",
    "augment_speed", "badlabels_rejection_percentage", "num_sigmas_reject_badlabels",
    "contrastive", "contrastive_color", "contrastive_jit_flip", "dynamic_minibatch",
    "equidistant_point", "learning_rate_min", "loss_scale", "optimized_memory", "resize_step",
    "seq_scales", "sequential_subdivisions", "sgdr_cycle", "sgdr_mult", "track",
    "try_fix_nan", "unsupervised", "use_cuda_graph", "weights_reject_freq",
    "workspace_size_limit_MB",
}
_NET_KEYS = _NET_TRAINING_KEYS | _FORK_NET_KEYS | {"width", "height", "channels"}

_SECTION_ALIASES = {
    "net": "net", "network": "net",
    "convolutional": "convolutional", "conv": "convolutional",
    "shortcut": "shortcut",
    "route": "route",
    "upsample": "upsample",
    "maxpool": "maxpool", "max": "maxpool",
    "yolo": "yolo",
}

# What pjreddie's parser reads, per layer section.
_PJREDDIE_LAYER_KEYS = {
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
# What the fork adds to them. The [yolo] keys after beta_nms only matter for training
# and are ignored, as darknet ignores them at inference — iou_thresh included: the NMS
# threshold is the caller's, as it is darknet's -nms flag.
_FORK_LAYER_KEYS = {
    "convolutional": set(),
    "shortcut": {"weights_type", "weights_normalization"},
    "route": {"groups", "group_id"},
    "upsample": set(),
    "maxpool": set(),
    "yolo": {"scale_x_y", "new_coords", "nms_kind", "beta_nms",
             "iou_thresh", "iou_thresh_kind", "iou_normalizer", "obj_normalizer",
             "cls_normalizer", "delta_normalizer", "iou_loss", "max_delta",
             "counters_per_class", "label_smooth_eps", "objectness_smooth", "resize",
             "focal_loss", "show_details"},
}
_LAYER_KEYS = {kind: keys | _FORK_LAYER_KEYS[kind] for kind, keys in _PJREDDIE_LAYER_KEYS.items()}


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
    """The previous layer's output plus each source's (the fork allows several).

    A source with other channels than the previous layer adds to the channels both have
    (darknet's shortcut_multilayer_cpu); the output keeps the previous layer's shape.
    """

    line: int
    sources: tuple[int, ...]  # absolute indices of the layers added to the previous one
    activation: str


@dataclass(frozen=True)
class RouteSpec:
    """The sources concatenated along channels; with ``groups``, of each source only its
    ``group_id``-th slice of ``channels / groups`` channels (the fork's CSP blocks)."""

    line: int
    sources: tuple[int, ...]  # absolute layer indices, concatenated along channels
    groups: int = 1
    group_id: int = 0


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
    scale_x_y: float = 1.0  # box centre = scale * sigmoid - (scale - 1) / 2
    new_coords: bool = False  # the conv's logistic output is used as is: w = (2 x)^2 anchor
    nms_kind: str = "default"  # one of NMS_KINDS
    beta_nms: float = 0.6  # the DIoU exponent of nms_kind=diounms


LayerSpec = ConvSpec | ShortcutSpec | RouteSpec | UpsampleSpec | MaxpoolSpec | YoloSpec


@dataclass(frozen=True)
class NetworkSpec:
    """A parsed cfg. ``fork``: written for the maintained fork (AlexeyAB/darknet), i.e. it
    uses a key or activation that pjreddie's darknet does not read; the fork's rules then
    apply (its batch norm, its default resize). ``letter_box``: how an image is brought to
    the input size (see :func:`parse_cfg_text`)."""

    path: str
    width: int
    height: int
    channels: int
    layers: tuple[LayerSpec, ...] = field(default_factory=tuple)
    fork: bool = False
    letter_box: bool = True  # letterboxed (aspect kept, gray bars) or stretched

    @property
    def classes(self) -> int:
        heads = [layer.classes for layer in self.layers if isinstance(layer, YoloSpec)]
        if not heads:
            return 0
        return heads[0]

    @property
    def nms(self) -> tuple[str, float]:
        """(nms_kind, beta_nms) of the last [yolo] layer: what darknet's detector uses."""
        last = [layer for layer in self.layers if isinstance(layer, YoloSpec)][-1]
        return last.nms_kind, last.beta_nms


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

    def as_float(self, key: str, default: object = None) -> float:
        return self._get(key, default, float)  # type: ignore[return-value]

    def as_str(self, key: str, default: object = None) -> str:
        return self._get(key, default, str)  # type: ignore[return-value]

    def as_ints(self, key: str, default: object = None) -> list[int]:
        return self._get(key, default, lambda raw: [int(v) for v in _split(raw)])  # type: ignore[return-value]

    def as_floats(self, key: str, default: object = None) -> list[float]:
        return self._get(key, default, lambda raw: [float(v) for v in _split(raw)])  # type: ignore[return-value]

    def choice(self, key: str, default: str, allowed: tuple[str, ...] | frozenset[str],
               what: str) -> str:
        value = self.as_str(key, default)
        if value not in allowed:
            supported = ", ".join(sorted(allowed))
            raise self.error(f"unsupported {what} {value!r} (supported: {supported})",
                             self.line_of(key))
        return value

    def activation(self, default: str) -> str:
        return self.choice("activation", default, ACTIVATIONS, "activation")

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


def _written_for_fork(sections: list[_Section]) -> bool:
    """Whether the cfg uses anything pjreddie's darknet does not read: a fork-only key,
    activation, or a shortcut from several layers."""
    for section in sections:
        fork_keys = _FORK_NET_KEYS if section.kind == "net" else _FORK_LAYER_KEYS[section.kind]
        if fork_keys & section.options.keys():
            return True
        activation = section.options.get("activation")
        if activation and activation[0] not in _PJREDDIE_ACTIVATIONS:
            return True
        if section.kind == "shortcut" and "," in section.options.get("from", ("", 0))[0]:
            return True
    return False


def parse_cfg_text(text: str, path: str = "<cfg>",
                   input_size: int | tuple[int, int] | None = None) -> NetworkSpec:
    """Parse darknet cfg text into a :class:`NetworkSpec`.

    ``input_size`` overrides the cfg's width/height (an int for a square input, or
    ``(width, height)``); each side must be a positive multiple of 32.

    The resize follows the cfg, as the darknet it is written for would run it:
    ``[net] letter_box=1`` letterboxes (aspect ratio kept, centred on 0.5 gray) and
    ``letter_box=0`` stretches to the input size, as the fork does. Without the key, a cfg
    written for the fork (``NetworkSpec.fork``: yolov4, yolov7...) is stretched, the
    fork's default; one that pjreddie's darknet reads entirely (the YOLOv3 family) is
    letterboxed, as pjreddie's darknet always does — and as its reference detections were
    made. (A fork-trained cfg that uses nothing of the fork's, such as yolov3-tiny-prn,
    reads as pjreddie's: ``letter_box=0`` in its [net] gives the fork's stretch.)
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
    fork = _written_for_fork(sections)
    letter_box = bool(net.as_int("letter_box", 0 if fork else 1))

    layers: list[LayerSpec] = []
    for index, section in enumerate(sections[1:]):
        reader = _Reader(path, section)
        layers.append(_build_layer(reader, index))
    if not any(isinstance(layer, YoloSpec) for layer in layers):
        raise CfgError(f"{path}: no [yolo] layer: not a YOLO detector cfg")
    spec = NetworkSpec(path=path, width=width, height=height, channels=channels,
                       layers=tuple(layers), fork=fork, letter_box=letter_box)
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
        for source in layer.sources:
            if shapes[source][1:] != shape[1:]:
                raise CfgError(f"{where}: shortcut adds a {shapes[source]} output to a "
                               f"{shape} one (the sizes must match)")
    elif isinstance(layer, RouteSpec):
        sizes = {shapes[i][1:] for i in layer.sources}
        if len(sizes) != 1:
            raise CfgError(f"{where}: route joins layers of different sizes {sorted(sizes)}")
        height, width = sizes.pop()
        uneven = [shapes[i][0] for i in layer.sources if shapes[i][0] % layer.groups]
        if uneven:
            raise CfgError(f"{where}: groups={layer.groups} does not divide the {uneven[0]} "
                           f"channels of a routed layer")
        channels = sum(shapes[i][0] // layer.groups for i in layer.sources)
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
        for key in ("weights_type", "weights_normalization"):
            if reader.as_str(key, "none") != "none":
                raise reader.error(f"weighted shortcuts ({key}={reader.as_str(key)}) are not "
                                   "supported", reader.line_of(key))
        values = reader.as_ints("from", _REQUIRED)
        activation = reader.activation("linear")
        if activation in CONV_ONLY_ACTIVATIONS:
            raise reader.error(f"darknet's [shortcut] cannot apply activation {activation!r} "
                               "(only a [convolutional] does)", reader.line_of("activation"))
        return ShortcutSpec(line=line,
                            sources=tuple(_absolute(reader, "from", v, index) for v in values),
                            activation=activation)
    if kind == "route":
        values = reader.as_ints("layers", _REQUIRED)
        groups = reader.as_int("groups", 1)
        group_id = reader.as_int("group_id", 0)
        if groups <= 0 or not 0 <= group_id < groups:
            raise reader.error(f"route needs groups >= 1 and 0 <= group_id < groups, got "
                               f"groups={groups} group_id={group_id}", reader.line_of("groups"))
        return RouteSpec(line=line,
                         sources=tuple(_absolute(reader, "layers", v, index) for v in values),
                         groups=groups, group_id=group_id)
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
        return YoloSpec(line=line, classes=classes, anchors=pairs,
                        scale_x_y=reader.as_float("scale_x_y", 1.0),
                        new_coords=bool(reader.as_int("new_coords", 0)),
                        nms_kind=reader.choice("nms_kind", "default", NMS_KINDS, "nms_kind"),
                        beta_nms=reader.as_float("beta_nms", 0.6))
    raise reader.error(f"[{kind}] cannot be a layer")
