"""The network as one graph, for the runtimes that compile it (OpenVINO, ONNX Runtime)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

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
    a runtime compiles for that size once and any batch runs on it. Call it, and convert
    what it returns, inside :func:`quietly`.
    """
    network = network.eval().to("cpu", torch.float32)
    network = network.to(memory_format=torch.contiguous_format)
    spec = network.spec
    example = torch.zeros((EXAMPLE_BATCH, 3, spec.height, spec.width))
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(network, (example,), dynamic_shapes=({0: batch},))


@contextmanager
def quietly() -> Iterator[None]:
    """An export and its conversion without the exporters' chatter in the worker's log:
    PyTorch's own pytree code warns about itself (torch 2.13), and torch.onnx, onnxscript
    and onnx_ir log every pass. Errors still come through."""
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
