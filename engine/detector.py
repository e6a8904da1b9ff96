"""The detector: images in, darknet-faithful detections out, in batches."""

from __future__ import annotations

import contextlib
import logging
import platform
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import runtimes
from .cfg import parse_cfg
from .model import Darknet
from .nms import batched_nms, darknet_diou_beta
from .preprocess import Letterbox, boxes_to_image
from .registry import model_info
from .types import PRECISIONS, Detection, DetectOptions, OutOfMemory, read_names
from .weights import read_darknet_weights

logger = logging.getLogger(__name__)

# The folder beside the weights where exported models are kept (see runtimes.cache).
COMPILED_DIR = "compiled"


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, the CPU allocator's failure, or Python's MemoryError."""
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    message = str(exc)
    return "out of memory" in message or "can't allocate memory" in message


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 convolutions run natively rather than emulated."""
    return bool(torch.backends.mkldnn.is_available() and torch.cpu._is_avx512_bf16_supported())


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r} (auto, cpu, cuda, cuda:N)")
    return torch.device(device)


def cpu_vendor() -> str:
    """The CPU's vendor string ("GenuineIntel", "AuthenticAMD"...) from Linux's
    /proc/cpuinfo; "" elsewhere (auto then keeps fp32 unless the CPU has AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_prefers_bf16() -> bool:
    """Whether bf16 is the precision to use on this CPU: with AMX tiles (matrix units
    built for bf16), or AVX512-BF16 on AMD (Zen 4 and later), where bf16 runs yolov3-tiny
    about 1.7 x faster than fp32. Intel's AVX512-BF16 without AMX (or with AMX hidden
    from a virtual machine) ran it 1.2-1.5 x slower than fp32, so that gets fp32
    (README, Figures).

    A rule rather than a timing taken at start-up: a measurement on a busy machine can
    go either way, and workers on the same machine must give the same answers.
    """
    if not cpu_has_native_bf16():
        return False
    return bool(torch.cpu._is_amx_tile_supported()) or cpu_vendor() == "AuthenticAMD"


def resolve_precision(precision: str, device: torch.device, runtime: str = "torch", *,
                      int8_ready: bool = False) -> str:
    """``auto`` -> with torch, fp16 on CUDA, and on a CPU bf16 where
    :func:`cpu_prefers_bf16`, else fp32; with OpenVINO, int8 where ``int8_ready`` (an
    INT8 model of these weights passed its accuracy check: ``runtimes.int8_passed``),
    else fp32; with ONNX Runtime, fp32."""
    if precision == "auto":
        if runtime == "openvino" and int8_ready:
            return "int8"
        if runtime != "torch":
            return "fp32"
        if device.type == "cuda":
            return "fp16"
        return "bf16" if cpu_prefers_bf16() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (auto, {', '.join(PRECISIONS)})")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 is for CUDA devices; use fp32 or bf16 on the CPU")
    if precision not in runtimes.PRECISIONS[runtime]:
        served = ", ".join(runtimes.PRECISIONS[runtime])
        raise ValueError(f"the {runtime} runtime serves {served}, not {precision} "
                         "(the torch runtime serves fp32, bf16 and fp16; the openvino "
                         "runtime fp32 and int8)")
    return precision


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def resolve_runtime(runtime: str, device: torch.device, precision: str, *,
                    int8_ready: bool = False) -> str:
    """The runtime that runs the network. ``auto`` is a rule, never a timing taken at
    start-up (workers on one machine must give the same answers):

    - torch on CUDA;
    - OpenVINO where the precision is int8 (it alone serves INT8);
    - OpenVINO on an x86-64 CPU where the precision is auto and ``int8_ready`` (an INT8
      model of these weights passed its accuracy check): the user quantized it, and it
      holds darknet's accuracy;
    - torch where the precision is bf16, asked for or picked by ``auto`` (where
      :func:`cpu_prefers_bf16`: there bf16 PyTorch is the fastest fp32-accurate runtime
      measured, and no other runtime here serves bf16);
    - OpenVINO on an x86-64 CPU, when its package imports;
    - torch on every other CPU (aarch64, Apple silicon...), or where OpenVINO is absent.

    A runtime asked for by name must be installed: else a ValueError names the package.
    """
    if runtime != "auto":
        runtimes.require(runtime)
        return runtime
    if device.type == "cuda":
        return "torch"
    if precision == "int8":
        runtimes.require("openvino")
        return "openvino"
    openvino_here = is_x86_64() and runtimes.is_installed("openvino")
    if precision == "auto" and int8_ready and openvino_here:
        return "openvino"
    if resolve_precision(precision, device) != "fp32":
        return "torch"
    return "openvino" if openvino_here else "torch"


class Detector:
    """A loaded network plus its class names, ready to detect.

    One instance per process: loading is the expensive part. ``detect`` is safe to call
    from several threads (calls are serialized around the forward pass).

    ``runtime`` says what runs the forward pass (``engine.runtimes``): ``torch``,
    ``openvino``, ``onnxruntime``, or ``auto`` (see :func:`resolve_runtime`: torch on
    CUDA and wherever bf16 is the precision, OpenVINO on other x86-64 CPUs where it is
    installed, else torch; OpenVINO INT8 where a quantized model passed its check).
    Each runtime prepares the images its own way (OpenVINO letterboxes in its graph,
    the others take PyTorch's letterbox: the same numbers); post-processing is the same
    for all. A runtime other than torch runs a model exported from ``network``, kept in
    ``cache`` (none: exported in memory, every time). ``streams`` > 1 lets OpenVINO run
    that many forward passes at once (``start_each``; the batcher keeps them busy).
    """

    def __init__(self, network: Darknet, names: Sequence[str], *, device: str = "auto",
                 precision: str = "auto", max_batch: int = 8, runtime: str = "auto",
                 cache: runtimes.ExportCache | None = None, streams: int = 1) -> None:
        if len(names) != network.spec.classes:
            raise ValueError(f"{len(names)} class names for a network with "
                             f"{network.spec.classes} classes")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if streams < 1:
            raise ValueError("streams must be at least 1")
        self.device = resolve_device(device)
        # Only where auto could pick INT8 (the check hashes the weights).
        int8_ready = (precision == "auto" and runtime in ("auto", "openvino")
                      and self.device.type == "cpu" and runtimes.is_installed("openvino")
                      and runtimes.int8_passed(cache, network.spec))
        self.runtime = resolve_runtime(runtime, self.device, precision, int8_ready=int8_ready)
        if self.device.type not in runtimes.devices(self.runtime):
            raise ValueError(f"the {self.runtime} runtime runs on "
                             f"{' or '.join(runtimes.devices(self.runtime))} here, not on "
                             f"{self.device} (set the device to cpu)")
        self.precision = resolve_precision(precision, self.device, self.runtime,
                                           int8_ready=int8_ready)
        self.names = list(names)
        self.max_batch = max_batch
        self.network = network  # the source every runtime is built from
        self.cache = cache
        self.backend = runtimes.build_runtime(self.runtime, network, device=self.device,
                                              precision=self.precision, cache=cache,
                                              streams=streams)
        self._lock = threading.Lock()

    @classmethod
    def from_files(cls, cfg: str | Path, weights: str | Path, names: str | Path, *,
                   input_size: int | tuple[int, int] | None = None,
                   cache_dir: str | Path | None = None, **kwargs) -> Detector:
        """Load cfg, weights and class names; exported models are kept in ``cache_dir``
        (default: ``compiled/`` beside the weights)."""
        spec = parse_cfg(cfg, input_size)
        network = Darknet(spec)
        _, blocks = read_darknet_weights(weights, spec)
        network.load_weights(blocks)
        cache = runtimes.ExportCache(cache_dir or Path(weights).parent / COMPILED_DIR, weights)
        return cls(network, read_names(names), cache=cache, **kwargs)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.network.spec.width, self.network.spec.height

    @property
    def letter_box(self) -> bool:
        """Whether images are letterboxed (else stretched) to the input size: the cfg's
        rule, see :func:`engine.cfg.parse_cfg_text`."""
        return self.network.spec.letter_box

    def class_ids(self, classes: Iterable[str | int] | None) -> frozenset[int] | None:
        """Class names or ids -> ids; unknown names or ids are a ValueError naming them."""
        if classes is None:
            return None
        ids, unknown = set(), []
        for item in classes:
            if isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit()):
                value = int(item)
                if 0 <= value < len(self.names):
                    ids.add(value)
                else:
                    unknown.append(str(item))
            elif isinstance(item, str) and item.strip() in self.names:
                ids.add(self.names.index(item.strip()))
            else:
                unknown.append(str(item))
        if unknown:
            raise ValueError(f"unknown classes: {', '.join(unknown)}")
        return frozenset(ids)

    @property
    def parallel_passes(self) -> int:
        """Forward passes that can be under way at once (see :meth:`start_each`)."""
        return self.backend.parallel

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        """(H, W, 3) uint8 RGB arrays -> the runtime's inputs for them (for torch and ONNX
        Runtime the letterboxed, or stretched (see :attr:`letter_box`), (B, 3, h, w) float32
        batch; for OpenVINO the pixels and resize tables its graph resizes from), and where
        each image sits in them."""
        net_width, net_height = self.input_size
        return self.backend.prepare(images, net_width, net_height, letter_box=self.letter_box)

    def forward(self, inputs: Any) -> list[torch.Tensor]:
        """Prepared inputs -> decoded heads, each (B, A, H, W, 5 + C) float32, whichever
        runtime runs it."""
        return self.start(inputs).result()

    def start(self, inputs: Any) -> runtimes.Pending:
        """Start a forward pass on prepared inputs; ``result()`` waits for its heads."""
        with self._lock:  # one thread at a time hands passes to the runtime
            return self.backend.start(inputs)

    def start_each(self, images: Sequence[np.ndarray],
                   options: Sequence[DetectOptions]) -> PendingDetections:
        """Like :meth:`detect_each`, without waiting: pre-process now and start the
        forward passes (one per ``max_batch`` images), so that up to
        :attr:`parallel_passes` run at once; ``result()`` waits and post-processes. An
        error (out of memory included) is raised by ``result()``."""
        if len(images) != len(options):
            raise ValueError(f"{len(images)} images but {len(options)} option sets")
        passes = []
        for start in range(0, len(images), self.max_batch):
            inputs, boxes = self.preprocess(images[start:start + self.max_batch])
            passes.append((self.start(inputs), boxes, options[start:start + self.max_batch]))
        return PendingDetections(self, passes)

    def options(self, *, min_confidence: float = 0.25, iou_threshold: float = 0.45,
                classes: Iterable[str | int] | None = None,
                max_detections: int = 100) -> DetectOptions:
        """Validated per-call options; class names or ids are resolved against this model."""
        return DetectOptions(min_confidence=min_confidence, iou_threshold=iou_threshold,
                             classes=self.class_ids(classes), max_detections=max_detections)

    def detect(self, images: Sequence[np.ndarray], **options) -> list[list[Detection]]:
        """Detect objects in each image; one list of detections per image, best first.

        A detection is a (box, class) whose score = objectness x class probability is
        above ``min_confidence``; like darknet, one box may yield several classes.
        Keyword options: see :meth:`options`.
        """
        chosen = self.options(**options)
        return self.detect_each(images, [chosen] * len(images))

    def detect_each(self, images: Sequence[np.ndarray],
                    options: Sequence[DetectOptions]) -> list[list[Detection]]:
        """Like :meth:`detect`, with options per image (requests batched together)."""
        if len(images) != len(options):
            raise ValueError(f"{len(images)} images but {len(options)} option sets")
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.max_batch):
            results.extend(self._detect_batch(images[start:start + self.max_batch],
                                              options[start:start + self.max_batch]))
        return results

    def _detect_batch(self, images: Sequence[np.ndarray],
                      options: Sequence[DetectOptions]) -> list[list[Detection]]:
        """One forward pass; if it runs out of memory, split the batch in two and retry."""
        try:
            inputs, boxes = self.preprocess(images)
            heads = self.forward(inputs)
            return self.postprocess(heads, boxes, options)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
        # Retried outside the except block, so that the failed attempt's tensors (held by
        # the traceback while it is being handled) are freed first.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(images) == 1:
            raise OutOfMemory("one image does not fit in memory at this input size")
        half = len(images) // 2
        logger.warning("out of memory on a batch of %d: splitting it in two", len(images))
        return (self._detect_batch(images[:half], options[:half])
                + self._detect_batch(images[half:], options[half:]))

    def postprocess(self, heads: list[torch.Tensor], boxes: list[Letterbox],
                    options: Sequence[DetectOptions]) -> list[list[Detection]]:
        """Decoded heads -> thresholded, class-aware-NMSed detections in image pixels."""
        batch_size = len(boxes)
        num_classes = len(self.names)
        device = heads[0].device
        predictions = torch.cat([h.reshape(batch_size, -1, 5 + num_classes) for h in heads],
                                dim=1)  # (B, N, 5 + C)
        threshold = torch.tensor([o.min_confidence for o in options], device=device)  # (B,)
        allowed = torch.ones((batch_size, num_classes), dtype=torch.bool, device=device)
        for index, chosen in enumerate(options):
            if chosen.classes is not None:
                allowed[index] = False
                allowed[index, list(chosen.classes)] = True
        image_index, anchor_index = torch.nonzero(predictions[..., 4] > threshold[:, None],
                                                  as_tuple=True)
        candidates = predictions[image_index, anchor_index]  # (K, 5 + C)
        scores = candidates[:, 4:5] * candidates[:, 5:]  # (K, C)
        scores = scores.masked_fill(~allowed[image_index], 0)
        row, class_id = torch.nonzero(scores > threshold[image_index, None], as_tuple=True)
        score = scores[row, class_id]
        image_of = image_index[row]
        pixels = boxes_to_image(candidates[row, :4], image_of, boxes)  # (P, 4)
        iou = torch.tensor([o.iou_threshold for o in options], device=device)[image_of]
        limits = torch.tensor([[b.width, b.height, b.width, b.height] for b in boxes],
                              dtype=pixels.dtype, device=pixels.device)
        diou_beta = darknet_diou_beta(*self.network.spec.nms)
        # darknet's NMS sees boxes relative to the image, which DIoU (unlike IoU) tells apart.
        kept = batched_nms(pixels if diou_beta is None else pixels / limits[image_of], score,
                           image_of * num_classes + class_id, iou, diou_beta)

        clipped = torch.minimum(pixels[kept].clamp(min=0), limits[image_of[kept]])
        results: list[list[Detection]] = [[] for _ in boxes]
        for image, cls, conf, (x1, y1, x2, y2) in zip(image_of[kept].tolist(),
                                                       class_id[kept].tolist(),
                                                       score[kept].tolist(),
                                                       clipped.tolist(), strict=True):
            if len(results[image]) < options[image].max_detections:
                results[image].append(Detection(cls, self.names[cls], conf, x1, y1, x2, y2))
        return results


class PendingDetections:
    """Forward passes started by :meth:`Detector.start_each`."""

    def __init__(self, detector: Detector,
                 passes: list[tuple[runtimes.Pending, list[Letterbox], Sequence[DetectOptions]]]
                 ) -> None:
        self._detector = detector
        self._passes = passes

    def result(self) -> list[list[Detection]]:
        found: list[list[Detection]] = []
        try:
            for pending, boxes, options in self._passes:
                found.extend(self._detector.postprocess(pending.result(), boxes, options))
        except BaseException:
            for pending, _, _ in self._passes:  # each one waited for: its request freed
                with contextlib.suppress(Exception):
                    pending.result()
            raise
        return found


def load_detector(name: str, weights_dir: str | Path, **options) -> Detector:
    """Load a registered model from ``weights_dir`` (see :class:`Detector` for options)."""
    paths = model_info(name).paths(weights_dir)
    missing = paths.missing()
    if missing:
        raise FileNotFoundError(
            f"model {name!r} is not in {Path(weights_dir)} (missing "
            f"{', '.join(p.name for p in missing)}): run "
            f"'python manage.py fetch_weights --model {name}'")
    return Detector.from_files(paths.cfg, paths.weights, paths.names, **options)
