"""The network as one ONNX graph, for the runtimes that compile it (OpenVINO, ONNX Runtime).

``torch.export`` traces the module with a free batch dimension, and torch.onnx's
``dynamo=True`` exporter writes that graph as ONNX. The exporter needs the onnx and
onnxscript packages; so would the older TorchScript exporter (``dynamo=False`` imports
onnx too), and that one is deprecated in PyTorch 2.13 and due to be removed.

OpenVINO reads the same ONNX file (rather than converting the module itself with
``openvino.convert_model``): one export, one graph, for both runtimes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..model import Darknet

# The example batch that the graph is traced with: 2, because torch.export would take a
# batch of 1 for a constant and fix the graph to it.
EXAMPLE_BATCH = 2

# Loggers that narrate an export at INFO (each optimisation pass) or warn about what
# does not concern PMR (torchvision's operators, absent here).
_CHATTY_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")


def export_program(network: Darknet) -> torch.export.ExportedProgram:
    """``torch.export`` of the module in fp32 on the CPU, with a free batch dimension.

    The spatial size stays the spec's (the heads' grids and the decode depend on it), so
    a runtime compiles for that size once and any batch runs on it.
    """
    network = network.eval().to("cpu", torch.float32)
    network = network.to(memory_format=torch.contiguous_format)
    spec = network.spec
    example = torch.zeros((EXAMPLE_BATCH, 3, spec.height, spec.width))
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(network, (example,), dynamic_shapes=({0: batch},))


def export_onnx(network: Darknet) -> torch.onnx.ONNXProgram:
    """The module as an ONNX program (``.save(path)`` writes it, ``.model_proto`` holds it)."""
    with quietly():
        program = torch.onnx.export(export_program(network), dynamo=True, verbose=False)
    if program is None:  # only the TorchScript exporter (dynamo=False) returns None
        raise RuntimeError("torch.onnx.export returned no program")
    return program


def write_onnx(network: Darknet, path: Path) -> None:
    # external_data=False: one file (a model under 2 GB fits protobuf's limit).
    export_onnx(network).save(path, external_data=False)


@contextmanager
def quietly() -> Iterator[None]:
    """An export without the exporters' chatter in the worker's log: PyTorch's own pytree
    code warns about itself (torch 2.13), and torch.onnx, onnxscript and onnx_ir log
    every pass. Errors still come through."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
