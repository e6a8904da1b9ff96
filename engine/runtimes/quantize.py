"""INT8 by NNCF's post-training quantization of the OpenVINO network.

The fp32 network (the export the ``openvino`` runtime compiles) is quantized with
``nncf.quantize``: NNCF runs it on the calibration images, letterboxed exactly as at
inference (``preprocess.letterbox_batch``), to choose the ranges of the convolutions'
inputs and weights, and corrects the biases the rounding moved. The result is kept in
the export cache as the network's INT8 IR, where ``build_openvino`` finds it; checking
its accuracy and recording the check is ``engine.int8``'s work.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
import torch

from ..model import Darknet
from ..preprocess import letterbox_batch
from .cache import ExportCache
from .openvino_backend import ir_path, network_model


def quantize(network: Darknet, images: Sequence[np.ndarray], *, cache: ExportCache) -> Path:
    """Quantize ``network`` to INT8, calibrated on ``images`` ((H, W, 3) uint8 RGB), and
    keep it in ``cache`` (replacing an INT8 model made before); its IR's path."""
    if not images:
        raise ValueError("no calibration images")
    spec = network.spec
    cpu = torch.device("cpu")

    def letterboxed(image: np.ndarray) -> np.ndarray:
        batch, _ = letterbox_batch([image], spec.width, spec.height, cpu,
                                   letter_box=spec.letter_box)
        return batch.numpy()  # (1, 3, h, w) float32

    model = network_model(network, precision="fp32", cache=cache)
    quantized = nncf.quantize(model, nncf.Dataset(list(images), letterboxed),
                              subset_size=len(images))
    path = ir_path(network, cache, "int8")
    stored = cache.stored(path, lambda staged: ov.save_model(quantized, staged,
                                                             compress_to_fp16=False),
                          replace=True)
    if stored is None:
        raise OSError(f"cannot write the INT8 model into {cache.directory}")
    return stored
