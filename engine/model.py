"""A darknet YOLO network as a PyTorch module, built from a parsed cfg.

Batch norm is folded into the convolutions when weights are loaded, so the module
only ever runs conv + bias + activation: the inference form of darknet's layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .cfg import (
    ConvSpec,
    LayerSpec,
    MaxpoolSpec,
    NetworkSpec,
    RouteSpec,
    ShortcutSpec,
    UpsampleSpec,
    YoloSpec,
    input_channels,
)
from .weights import ConvWeights

# pjreddie's normalize_cpu divides by sqrt(variance) + .000001f (not sqrt(variance + eps)).
DARKNET_BN_EPSILON = 1e-6
# The fork's normalize_cpu and fuse_conv_batchnorm divide by sqrt(variance + .00001).
FORK_BN_EPSILON = 1e-5
# activate_array_normalize_channels*: the sum over channels starts from this.
_NORMALIZE_EPSILON = 1e-4


def _stair(x: torch.Tensor) -> torch.Tensor:
    floor = torch.floor(x)
    half = torch.floor(x / 2)
    # C's n % 2 for n = (int) floorf(x): -3 % 2 is -1, odd as well.
    return torch.where(torch.fmod(floor, 2) == 0, half, x - floor + half)


def _normalize_channels(x: torch.Tensor) -> torch.Tensor:
    positive = x.clamp(min=0)
    return positive / (positive.sum(dim=1, keepdim=True) + _NORMALIZE_EPSILON)


def _normalize_channels_softmax(x: torch.Tensor, subtract_max: bool) -> torch.Tensor:
    exponent = torch.exp(x - x.amax(dim=1, keepdim=True) if subtract_max else x)
    return exponent / (exponent.sum(dim=1, keepdim=True) + _NORMALIZE_EPSILON)


# darknet's activations (activations.h, activation_kernels.cu), with its own constants
# (selu's 1.0507 and 1.6732, gelu's 0.797885 and 0.035677 differ from PyTorch's). The
# normalize_channels ones work across channels, per pixel. relu6 is darknet's
# relu6_activate: its CPU activate() has no case for it and writes 0, its GPU kernel
# clamps to [0, 6]. Leaky and relu run in place: the input is always a fresh tensor.
ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "logistic": torch.sigmoid,
    "loggy": lambda x: 2 * torch.sigmoid(x) - 1,
    "relu": lambda x: F.relu(x, inplace=True),
    "relu6": F.relu6,
    "elu": lambda x: torch.where(x >= 0, x, torch.exp(x) - 1),
    "selu": lambda x: torch.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * (torch.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + torch.tanh(0.797885 * x + 0.035677 * x * x * x)),
    "relie": lambda x: torch.where(x > 0, x, 0.01 * x),
    "ramp": lambda x: F.relu(x) + 0.1 * x,
    "leaky": lambda x: F.leaky_relu(x, 0.1, inplace=True),
    "revleaky": lambda x: F.leaky_relu(x, 0.1, inplace=True),  # leaky at inference
    "tanh": torch.tanh,
    "plse": lambda x: torch.where(x < -4, 0.01 * (x + 4),
                                  torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5)),
    "stair": _stair,
    "hardtan": lambda x: F.hardtanh(x, -1.0, 1.0),
    "lhtan": lambda x: torch.where(x < 0, 0.001 * x,
                                   torch.where(x > 1, 0.001 * (x - 1) + 1, x)),
    "swish": F.silu,
    "mish": F.mish,  # x tanh(softplus(x)); darknet's softplus threshold 20 changes no float
    "hard_mish": lambda x: torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, 0.0)),
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": lambda x: _normalize_channels_softmax(x, False),
    "normalize_channels_softmax_maxval": lambda x: _normalize_channels_softmax(x, True),
}


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """darknet's activation ``activation`` (a cfg name) applied to (B, C, H, W) ``x``."""
    return ACTIVATION_FUNCTIONS[activation](x)


class Conv(nn.Module):
    def __init__(self, spec: ConvSpec, in_channels: int) -> None:
        super().__init__()
        self.spec = spec
        self.conv = nn.Conv2d(in_channels, spec.filters, spec.size, spec.stride, spec.padding,
                              groups=spec.groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activate(self.conv(x), self.spec.activation)

    @torch.no_grad()
    def load(self, weights: ConvWeights, fork: bool = False) -> None:
        """Load one conv's weights, folding its batch norm as the darknet of the cfg does
        (``fork``: the maintained fork's, else pjreddie's)."""
        kernel = torch.from_numpy(weights.weights).reshape(self.conv.weight.shape)
        bias = torch.from_numpy(weights.biases)
        if weights.scales is not None and fork:
            # The fork's fuse_conv_batchnorm, in double as it computes it:
            # weights * scale / sqrt(var + eps), bias - scale * mean / sqrt(var + eps).
            factor = torch.from_numpy(weights.scales).double() / (
                torch.from_numpy(weights.rolling_variance).double() + FORK_BN_EPSILON).sqrt()
            kernel = (kernel.double() * factor.view(-1, 1, 1, 1)).float()
            bias = (bias.double() - torch.from_numpy(weights.rolling_mean) * factor).float()
        elif weights.scales is not None:
            # Fold pjreddie's BN: scale * (conv - mean) / (sqrt(var) + eps) + bias.
            factor = torch.from_numpy(weights.scales) / (
                torch.from_numpy(weights.rolling_variance).sqrt() + DARKNET_BN_EPSILON)
            kernel = kernel * factor.view(-1, 1, 1, 1)
            bias = bias - torch.from_numpy(weights.rolling_mean) * factor
        self.conv.weight.copy_(kernel)
        self.conv.bias.copy_(bias)


class Maxpool(nn.Module):
    """darknet's maxpool: ``padding // 2`` before, the rest after, filled with -inf.

    For yolov3-tiny's size=2 stride=1 that is one column/row on the right/bottom only,
    which zero padding (or PyTorch's symmetric padding) would not reproduce.
    """

    def __init__(self, spec: MaxpoolSpec) -> None:
        super().__init__()
        self.spec = spec
        self.before = spec.padding // 2
        self.after = spec.padding - self.before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size, stride = self.spec.size, self.spec.stride
        height, width = x.shape[-2:]
        if (size == stride and height % size == 0 and width % size == 0
                and x.is_contiguous(memory_format=torch.channels_last)):
            return _tiled_max(x, size)
        if self.before == self.after:
            return F.max_pool2d(x, size, stride, padding=self.before)  # pads with -inf
        out_h = (height + self.spec.padding - size) // stride + 1
        out_w = (width + self.spec.padding - size) // stride + 1
        # Pad only where a window reaches outside (not, e.g., for 2x2/2 on an even size).
        pad_bottom = max(0, (out_h - 1) * stride + size - self.before - height)
        pad_right = max(0, (out_w - 1) * stride + size - self.before - width)
        if self.before or pad_bottom or pad_right:
            x = F.pad(x, (self.before, pad_right, self.before, pad_bottom), value=float("-inf"))
        return F.max_pool2d(x, size, stride)


def _tiled_max(x: torch.Tensor, size: int) -> torch.Tensor:
    """Max over non-overlapping size x size windows of a channels_last tensor.

    The windows tile the input exactly, so no padding is read. Taking maxima of
    contiguous slices of the NHWC layout is several times faster on the CPU than
    ``max_pool2d``'s channels_last kernel for the large early feature maps.
    """
    batch, channels, height, width = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(batch, height // size, size, width // size,
                                         size * channels)  # (B, H', k, W', k * C)
    best = rows[:, :, 0]
    for offset in range(1, size):
        best = torch.maximum(best, rows[:, :, offset])  # (B, H', W', k * C)
    result = best[..., :channels]
    for offset in range(1, size):
        result = torch.maximum(result, best[..., offset * channels:(offset + 1) * channels])
    return result.permute(0, 3, 1, 2)  # (B, C, H', W'), channels_last in memory


class Upsample(nn.Module):
    def __init__(self, spec: UpsampleSpec) -> None:
        super().__init__()
        self.stride = spec.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.stride, mode="nearest")


class Yolo(nn.Module):
    """A YOLO head: decodes the previous conv's output as darknet's yolo_layer does."""

    def __init__(self, spec: YoloSpec) -> None:
        super().__init__()
        self.spec = spec
        self.classes = spec.classes
        self.register_buffer("anchors", torch.tensor(spec.anchors, dtype=torch.float32),
                             persistent=False)

    def decode(self, x: torch.Tensor, net_width: int, net_height: int) -> torch.Tensor:
        """Raw conv output -> (B, A, H, W, 5 + C) in float32.

        Channels: box centre x, y and size w, h as fractions of the network input (like
        darknet's get_yolo_box), objectness, then per-class probabilities. With
        ``new_coords`` the conv's (logistic) output is taken as is — no sigmoid, and
        w = (2 x)^2 anchor instead of exp(x) anchor; ``scale_x_y`` stretches the centre
        offset around the cell's middle (forward_yolo_layer's scal_add_cpu).
        """
        batch, _, height, width = x.shape
        anchors = len(self.spec.anchors)
        x = x.float().permute(0, 2, 3, 1).reshape(batch, height, width, anchors, 5 + self.classes)
        x = x.permute(0, 3, 1, 2, 4)  # (B, A, H, W, 5 + C)
        grid_y, grid_x = torch.meshgrid(torch.arange(height, device=x.device),
                                        torch.arange(width, device=x.device), indexing="ij")
        anchor_w = (self.anchors[:, 0] / net_width).view(1, anchors, 1, 1)
        anchor_h = (self.anchors[:, 1] / net_height).view(1, anchors, 1, 1)
        if self.spec.new_coords:
            offset, size, scores = x[..., :2], x[..., 2:4] * x[..., 2:4] * 4, x[..., 4:]
        else:
            offset, size, scores = (torch.sigmoid(x[..., :2]), torch.exp(x[..., 2:4]),
                                    torch.sigmoid(x[..., 4:]))
        scale = self.spec.scale_x_y
        if scale != 1:
            offset = offset * scale - 0.5 * (scale - 1)  # (B, A, H, W, 2)
        return torch.cat([
            ((grid_x + offset[..., 0]) / width).unsqueeze(-1),
            ((grid_y + offset[..., 1]) / height).unsqueeze(-1),
            (size[..., 0] * anchor_w).unsqueeze(-1),
            (size[..., 1] * anchor_h).unsqueeze(-1),
            scores,
        ], dim=-1)  # (B, A, H, W, 5 + C)


def route_group(x: torch.Tensor, groups: int, group_id: int) -> torch.Tensor:
    """darknet's route slice: of each input, the group_id-th of ``groups`` equal parts."""
    if groups == 1:
        return x
    size = x.shape[1] // groups
    return x[:, group_id * size:(group_id + 1) * size]


def shortcut_sum(x: torch.Tensor, sources: list[torch.Tensor]) -> torch.Tensor:
    """x plus each source over the channels both have (shortcut_multilayer_cpu)."""
    for source in sources:
        if source.shape[1] == x.shape[1]:
            x = x + source
        else:
            common = min(x.shape[1], source.shape[1])
            x = torch.cat([x[:, :common] + source[:, :common], x[:, common:]], dim=1)
    return x


def _make_module(layer: LayerSpec, in_channels: int) -> nn.Module:
    if isinstance(layer, ConvSpec):
        return Conv(layer, in_channels)
    if isinstance(layer, UpsampleSpec):
        return Upsample(layer)
    if isinstance(layer, MaxpoolSpec):
        return Maxpool(layer)
    if isinstance(layer, YoloSpec):
        return Yolo(layer)
    return nn.Identity()  # route and shortcut are wiring, done in Darknet.forward


class Darknet(nn.Module):
    """The network described by a :class:`NetworkSpec`.

    ``forward`` takes a (B, 3, H, W) batch at the spec's input size and returns one
    decoded tensor per YOLO head (see :meth:`Yolo.decode`).
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        inputs = input_channels(spec)
        self.layers = nn.ModuleList(_make_module(layer, channels)
                                    for layer, channels in zip(spec.layers, inputs, strict=True))
        self._keep = frozenset(source for layer in spec.layers
                               if isinstance(layer, RouteSpec | ShortcutSpec)
                               for source in layer.sources)

    @property
    def heads(self) -> list[Yolo]:
        return [m for m in self.layers if isinstance(m, Yolo)]

    @property
    def convs(self) -> list[Conv]:
        return [m for m in self.layers if isinstance(m, Conv)]

    def load_weights(self, weights: list[ConvWeights]) -> None:
        convs = self.convs
        if len(weights) != len(convs):
            raise ValueError(f"{len(weights)} weight blocks for {len(convs)} conv layers")
        for conv, block in zip(convs, weights, strict=True):
            conv.load(block, fork=self.spec.fork)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        saved: dict[int, torch.Tensor] = {}
        outputs: list[torch.Tensor] = []
        for index, (module, layer) in enumerate(zip(self.layers, self.spec.layers, strict=True)):
            if isinstance(layer, RouteSpec):
                parts = [route_group(saved[i], layer.groups, layer.group_id)
                         for i in layer.sources]
                x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            elif isinstance(layer, ShortcutSpec):
                x = activate(shortcut_sum(x, [saved[i] for i in layer.sources]), layer.activation)
            elif isinstance(layer, YoloSpec):
                outputs.append(module.decode(x, self.spec.width, self.spec.height))
            else:
                x = module(x)
            if index in self._keep:
                saved[index] = x
        return outputs
