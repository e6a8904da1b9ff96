"""The ``torch`` runtime: the darknet module itself, eager PyTorch."""

from __future__ import annotations

import torch

from ..model import Darknet

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchRuntime:
    """The module on ``device`` in ``precision``, channels-last (faster convolutions on
    the CPU and on GPUs with tensor cores); the heads come back in float32 whatever the
    precision (``Yolo.decode``)."""

    name = "torch"

    def __init__(self, network: Darknet, *, device: torch.device, precision: str) -> None:
        self.device = device
        self.dtype = DTYPES[precision]
        network = network.eval().to(device, self.dtype)
        self.network = network.to(memory_format=torch.channels_last)

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        batch = batch.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.network(batch)
