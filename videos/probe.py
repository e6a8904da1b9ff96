"""Checking a video upload before accepting it: by content, structure and first frame."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import filetype
from rest_framework import status

from pmr.errors import ApiError

# MIME types (from the file's signature) PMR takes as video, with the extension to store.
VIDEO_TYPES = {
    "video/mp4": "mp4", "video/x-m4v": "m4v", "video/quicktime": "mov",
    "video/x-matroska": "mkv", "video/webm": "webm", "video/x-msvideo": "avi",
    "video/mpeg": "mpg", "video/3gpp": "3gp", "video/x-flv": "flv",
}
_ISO_BMFF = {"video/mp4", "video/x-m4v", "video/quicktime", "video/3gpp"}


@dataclass(frozen=True)
class VideoInfo:
    extension: str
    content_type: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration_ms: int
    codec: str = ""


@dataclass(frozen=True)
class VideoLimits:
    max_pixels: int  # per frame
    max_frames: int
    max_duration_s: float
    max_fps: float


def _bad(code: str, message: str, http: int = status.HTTP_400_BAD_REQUEST, **details) -> ApiError:
    return ApiError(code, message, status_code=http, details=details)


def check_iso_bmff(path: str) -> None:
    """Walk an MP4/MOV's top-level boxes: a box running past the end means a cut file."""
    size = os.path.getsize(path)
    with open(path, "rb") as stream:
        position, seen = 0, set()
        while position + 8 <= size:
            stream.seek(position)
            header = stream.read(16)
            box_size = int.from_bytes(header[:4], "big")
            box_type = header[4:8].decode("latin-1")
            if box_size == 1:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:  # extends to the end of the file
                box_size = size - position
            if box_size < 8:
                raise _bad("corrupt_video", f"malformed '{box_type}' box at byte {position}")
            if position + box_size > size:
                raise _bad("corrupt_video", f"the file is truncated: its '{box_type}' box needs "
                           f"{position + box_size} bytes, the file has {size}")
            seen.add(box_type)
            position += box_size
    if "moov" not in seen:
        raise _bad("corrupt_video", "the file has no 'moov' box (index): cut or not finished")


def _check_pixels(width: int, height: int, limits: VideoLimits) -> None:
    if width * height > limits.max_pixels:
        raise _bad("too_large", f"frames are {width}x{height}; the limit is {limits.max_pixels} "
                   "pixels", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                   max_pixels=limits.max_pixels)


def probe_video(path: str, limits: VideoLimits) -> VideoInfo:
    """Classify and check a stored upload; raise ApiError (400/413/415) on any problem."""
    if os.path.getsize(path) == 0:
        raise _bad("empty_file", "the uploaded file is empty")
    with open(path, "rb") as stream:
        kind = filetype.guess(stream.read(8192))
    if kind is None:
        raise _bad("not_a_video", "the file is not a video")
    if kind.mime not in VIDEO_TYPES:
        raise _bad("unsupported_media_type", f"the file is {kind.mime}, not a video format PMR "
                   "reads", status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detected=kind.mime,
                   supported=sorted(VIDEO_TYPES))
    if kind.mime in _ISO_BMFF:
        check_iso_bmff(path)

    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise _bad("corrupt_video", "the video cannot be opened")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ")
        # Refuse a frame-size bomb from the header, before decoding a frame allocates it.
        _check_pixels(width, height, limits)
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok or frame is None:
        raise _bad("corrupt_video", "no frame of the video can be decoded (zero frames, or a "
                   "codec that cannot be read)")
    height, width = frame.shape[:2]  # the decoded frame is the truth
    if not math.isfinite(fps) or fps <= 0 or fps > limits.max_fps:
        raise _bad("invalid_video", f"the video claims {fps} frames per second",
                   max_fps=limits.max_fps)
    if frames <= 0:
        raise _bad("invalid_video", f"the video claims {frames} frames")
    duration_s = frames / fps
    _check_pixels(width, height, limits)
    if frames > limits.max_frames:
        raise _bad("too_large", f"the video has {frames} frames; the limit is "
                   f"{limits.max_frames}", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                   max_frames=limits.max_frames)
    if duration_s > limits.max_duration_s:
        raise _bad("too_large", f"the video lasts {duration_s:.1f} s; the limit is "
                   f"{limits.max_duration_s:g} s", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                   max_duration_s=limits.max_duration_s)
    return VideoInfo(extension=VIDEO_TYPES[kind.mime], content_type=kind.mime, width=width,
                     height=height, fps=fps, frame_count=frames,
                     duration_ms=round(1000 * duration_s),
                     codec=codec if codec.isprintable() else "")
