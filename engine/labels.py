"""Class names as other services spell them.

darknet's coco.names differs from the COCO dataset's names in six places; DeepStack (and
CodeProject.AI) use the COCO names; Rekognition capitalises each word.
"""

from __future__ import annotations

DARKNET_TO_COCO = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch",
                   "pottedplant": "potted plant", "diningtable": "dining table",
                   "tvmonitor": "tv"}
_REKOGNITION_SPECIAL = {"tv": "TV"}


def coco_name(name: str) -> str:
    """darknet's class name as the COCO dataset (and DeepStack) spell it."""
    return DARKNET_TO_COCO.get(name, name)


def rekognition_name(name: str) -> str:
    """Rekognition's style: Title Case words ("Dining Table", "Traffic Light", "TV")."""
    coco = coco_name(name)
    return _REKOGNITION_SPECIAL.get(coco, coco.title())
