"""A darknet YOLOv3 network as a PyTorch module, built from a parsed cfg.

Batch norm is folded into the convolutions when weights are loaded, so the module
only ever runs conv + bias + activation: the inference form of darknet's layers.
"""

from __future__ import annotations

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

# darknet's normalize_cpu divides by sqrt(variance) + .000001f (not sqrt(variance + eps)).
DARKNET_BN_EPSILON = 1e-6


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "leaky":
        return F.leaky_relu(x, 0.1, inplace=True)
    if activation == "logistic":
        return torch.sigmoid(x)
    if activation == "relu":
        return F.relu(x, inplace=True)
    return x


class Conv(nn.Module):
    def __init__(self, spec: ConvSpec, in_channels: int) -> None:
        super().__init__()
        self.spec = spec
        self.conv = nn.Conv2d(in_channels, spec.filters, spec.size, spec.stride, spec.padding,
                              groups=spec.groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _activate(self.conv(x), self.spec.activation)

    @torch.no_grad()
    def load(self, weights: ConvWeights) -> None:
        kernel = torch.from_numpy(weights.weights).reshape(self.conv.weight.shape)
        bias = torch.from_numpy(weights.biases)
        if weights.scales is not None:
            # Fold darknet's BN: scale * (conv - mean) / (sqrt(var) + eps) + bias.
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
        darknet's get_yolo_box), objectness, then per-class probabilities.
        """
        batch, _, height, width = x.shape
        anchors = len(self.spec.anchors)
        x = x.float().permute(0, 2, 3, 1).reshape(batch, height, width, anchors, 5 + self.classes)
        x = x.permute(0, 3, 1, 2, 4)  # (B, A, H, W, 5 + C)
        grid_y, grid_x = torch.meshgrid(torch.arange(height, device=x.device),
                                        torch.arange(width, device=x.device), indexing="ij")
        anchor_w = (self.anchors[:, 0] / net_width).view(1, anchors, 1, 1)
        anchor_h = (self.anchors[:, 1] / net_height).view(1, anchors, 1, 1)
        return torch.cat([
            ((grid_x + torch.sigmoid(x[..., 0])) / width).unsqueeze(-1),
            ((grid_y + torch.sigmoid(x[..., 1])) / height).unsqueeze(-1),
            (torch.exp(x[..., 2]) * anchor_w).unsqueeze(-1),
            (torch.exp(x[..., 3]) * anchor_h).unsqueeze(-1),
            torch.sigmoid(x[..., 4:]),
        ], dim=-1)  # (B, A, H, W, 5 + C)


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
        referenced = set()
        for layer in spec.layers:
            if isinstance(layer, RouteSpec):
                referenced.update(layer.sources)
            elif isinstance(layer, ShortcutSpec):
                referenced.add(layer.source)
        self._keep = frozenset(referenced)

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
            conv.load(block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        saved: dict[int, torch.Tensor] = {}
        outputs: list[torch.Tensor] = []
        for index, (module, layer) in enumerate(zip(self.layers, self.spec.layers, strict=True)):
            if isinstance(layer, RouteSpec):
                parts = [saved[i] for i in layer.sources]
                x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            elif isinstance(layer, ShortcutSpec):
                x = _activate(x + saved[layer.source], layer.activation)
            elif isinstance(layer, YoloSpec):
                outputs.append(module.decode(x, self.spec.width, self.spec.height))
            else:
                x = module(x)
            if index in self._keep:
                saved[index] = x
        return outputs
