"""Checking a video upload before accepting it: by content, structure and first frame."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import av
import filetype
from rest_framework import status

from core.errors import ApiError

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


def _reason(exc: Exception) -> str:
    """FFmpeg's reason, without the server's file name."""
    return getattr(exc, "strerror", None) or type(exc).__name__


def _check_pixels(width: int, height: int, limits: VideoLimits) -> None:
    if width * height > limits.max_pixels:
        raise _bad("too_large", f"frames are {width}x{height}; the limit is {limits.max_pixels} "
                   "pixels", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                   max_pixels=limits.max_pixels)


def probe_video(path: str, limits: VideoLimits) -> VideoInfo:
    """Classify and check a stored upload; raise ApiError (400/413/415) on any problem.

    The container is read with PyAV (FFmpeg): its streams, their header (size, rate, frame
    count: the same values OpenCV's reader uses when the workers decode it), and the first
    frame, decoded. An MP4/MOV's index lists every frame: the file must hold them all
    (one that was cut short is refused here, not half-way through its job).
    """
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
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise _bad("corrupt_video", f"the video cannot be opened: {_reason(exc)}") from None
    with container:
        if not container.streams.video:
            raise _bad("corrupt_video", "the file has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        # Refuse a frame-size bomb from the header, before decoding a frame allocates it.
        _check_pixels(width, height, limits)
        fps = float(stream.guessed_rate or 0)
        frames = _frame_count(container, stream, fps)
        codec = _codec_name(stream)
        try:
            frame = next(container.decode(stream), None)
        except (av.FFmpegError, ValueError):
            frame = None
        if frame is None:
            raise _bad("corrupt_video", "no frame of the video can be decoded (zero frames, or "
                       "a codec that cannot be read)")
        width, height = frame.width, frame.height  # the decoded frame is the truth
        _check_rate_and_length(fps, frames, limits)
        _check_pixels(width, height, limits)
        if kind.mime in _ISO_BMFF:
            _check_every_frame_is_there(container, stream, frames)
    return VideoInfo(extension=VIDEO_TYPES[kind.mime], content_type=kind.mime, width=width,
                     height=height, fps=fps, frame_count=frames,
                     duration_ms=round(1000 * frames / fps), codec=codec)


def _frame_count(container, stream, fps: float) -> int:
    """The header's frame count, else duration x rate (what OpenCV's reader reports)."""
    if stream.frames:
        return int(stream.frames)
    seconds = (container.duration or 0) / av.time_base
    if seconds <= 0 and stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    return math.floor(seconds * fps + 0.5) if math.isfinite(seconds * fps) else 0


def _codec_name(stream) -> str:
    """FFmpeg's name of the stream's codec: "h264", "hevc", "vp8", "mpeg4"..."""
    return (stream.codec_context.name or "")[:16]


def _check_rate_and_length(fps: float, frames: int, limits: VideoLimits) -> None:
    if not math.isfinite(fps) or fps <= 0 or fps > limits.max_fps:
        raise _bad("invalid_video", f"the video claims {fps} frames per second",
                   max_fps=limits.max_fps)
    if frames <= 0:
        raise _bad("invalid_video", f"the video claims {frames} frames")
    if frames > limits.max_frames:
        raise _bad("too_large", f"the video has {frames} frames; the limit is "
                   f"{limits.max_frames}", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                   max_frames=limits.max_frames)
    duration_s = frames / fps
    if duration_s > limits.max_duration_s:
        raise _bad("too_large", f"the video lasts {duration_s:.1f} s; the limit is "
                   f"{limits.max_duration_s:g} s", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                   max_duration_s=limits.max_duration_s)


def _check_every_frame_is_there(container, stream, frames: int) -> None:
    """Read (not decode) every packet the index lists: a cut file runs out before."""
    container.seek(0, stream=stream)
    whole = 0
    try:
        for packet in container.demux(stream):
            if packet.size and not packet.is_corrupt:
                whole += 1
    except av.FFmpegError as exc:
        raise _bad("corrupt_video", f"the video cannot be read to its end: {_reason(exc)}") \
            from None
    if whole < frames:
        raise _bad("corrupt_video", f"the file is truncated: its index lists {frames} frames, "
                   f"{whole} are in the file")
