"""The ``torch`` runtime: the darknet module itself, eager PyTorch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..model import Darknet
from ..preprocess import Letterbox, letterbox_batch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Finished:
    """A forward pass that ran as it was started (runtimes without requests of their own)."""

    def __init__(self, heads: list[torch.Tensor]) -> None:
        self.heads = heads

    def result(self) -> list[torch.Tensor]:
        return self.heads


class FloatBatchRuntime:
    """What the runtimes that take the letterboxed float batch share: PyTorch letterboxes
    (on ``device``), and a pass runs as it starts, one at a time."""

    name: str
    parallel = 1
    device = torch.device("cpu")
    warm_start = True  # nothing to export or compile (the exported runtimes say otherwise)

    def prepare(self, images: Sequence[np.ndarray], width: int, height: int, *,
                letter_box: bool = True) -> tuple[torch.Tensor, list[Letterbox]]:
        return letterbox_batch(images, width, height, self.device, letter_box=letter_box)

    def start(self, inputs: torch.Tensor) -> Finished:
        return Finished(self(inputs))

    def __call__(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError


class TorchRuntime(FloatBatchRuntime):
    """The module on ``device`` in ``precision``, channels-last (faster convolutions on
    the CPU and on GPUs with tensor cores); the heads come back in float32 whatever the
    precision (``Yolo.decode``). On CUDA the letterbox runs on the GPU too."""

    name = "torch"

    def __init__(self, network: Darknet, *, device: torch.device, precision: str) -> None:
        self.device = device
        self.dtype = DTYPES[precision]
        network = network.eval().to(device, self.dtype)
        self.network = network.to(memory_format=torch.channels_last)

    def __call__(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        batch = inputs.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.network(batch)
