"""The YOLO detection engine: darknet cfg + weights in PyTorch (no Django here), for
pjreddie's darknet and the maintained fork's (YOLOv3, YOLOv4, YOLOv7).

Importing the package costs no PyTorch: the cfg parser, weights reader, image decoder,
model registry and the engine's value types are plain Python and NumPy, for the web
tier. The network itself — ``detector.Detector``, ``detector.load_detector`` — is
imported from ``engine.detector``, by the workers.
"""

from .cfg import CfgError, NetworkSpec, parse_cfg
from .image import ImageError, decode_image
from .registry import MODELS, model_info
from .types import Detection, DetectOptions, OutOfMemory, read_names
from .weights import WeightsError, read_darknet_weights, write_darknet_weights

__all__ = [
    "MODELS",
    "CfgError",
    "DetectOptions",
    "Detection",
    "ImageError",
    "NetworkSpec",
    "OutOfMemory",
    "WeightsError",
    "decode_image",
    "model_info",
    "parse_cfg",
    "read_darknet_weights",
    "read_names",
    "write_darknet_weights",
]
