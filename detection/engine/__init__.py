"""The YOLOv3 detection engine: darknet cfg + weights in PyTorch (no Django here)."""

from .cfg import CfgError, NetworkSpec, parse_cfg
from .detector import Detection, Detector
from .image import ImageError, decode_image
from .registry import MODELS, load_detector, model_info
from .weights import WeightsError, read_darknet_weights, write_darknet_weights

__all__ = [
    "MODELS",
    "CfgError",
    "Detection",
    "Detector",
    "ImageError",
    "NetworkSpec",
    "WeightsError",
    "decode_image",
    "load_detector",
    "model_info",
    "parse_cfg",
    "read_darknet_weights",
    "write_darknet_weights",
]
