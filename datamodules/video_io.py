"""Video decoding/encoding with PyAV and clip-index sampling (docs/cmpl.md "Data").

Only the sampled frames are converted; they are resized (libswscale, one ``VideoReformatter`` per video) so
that they *cover* ``(height, width)`` with the aspect ratio kept, then centre-cropped to exactly that size:
every clip of a dataset has the same shape and can be batched; random crops happen later
on the batch (``video_augment``).
"""

from __future__ import annotations

import math
import os

import av
import numpy as np
from av.video.reformatter import VideoReformatter


class VideoDecodeError(RuntimeError):
    """A video file could not be opened or decoded."""


def sample_clip_indices(
    num_frames: int,
    frames: int,
    stride: int,
    mode: str = "random",
    num_clips: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Frame indices of ``num_clips`` clips of ``frames`` frames ``stride`` apart; shape (num_clips, frames).

    ``random``: one clip at a uniformly random start (training). ``uniform``: ``num_clips`` starts evenly spaced over
    the video (test-time multi-view). Videos shorter than the clip span loop around (suite choice [X]).
    """
    if num_frames <= 0:
        raise ValueError(f"sample_clip_indices: the video has no frames (num_frames={num_frames})")
    if frames < 1 or stride < 1:
        raise ValueError(f"sample_clip_indices: frames and stride must be >= 1, got {frames}, {stride}")
    span = (frames - 1) * stride + 1
    room = max(num_frames - span, 0)
    if mode == "random":
        rng = rng if rng is not None else np.random.default_rng()
        starts = rng.integers(0, room + 1, size=num_clips)
    elif mode == "uniform":
        if num_clips == 1:
            starts = np.array([room // 2])
        else:
            starts = np.round(np.linspace(0, room, num_clips)).astype(np.int64)
    else:
        raise ValueError(f"sample_clip_indices: mode must be 'random' or 'uniform', got {mode!r}")
    idx = starts[:, None] + np.arange(frames)[None, :] * stride
    return idx % num_frames


def cover_size(src_h: int, src_w: int, out_h: int, out_w: int) -> tuple[int, int]:
    """Smallest (h, w) with the source aspect ratio that covers (out_h, out_w)."""
    scale = max(out_h / src_h, out_w / src_w)
    return max(out_h, math.ceil(src_h * scale - 1e-6)), max(out_w, math.ceil(src_w * scale - 1e-6))


def read_clips(
    path: str,
    frames: int,
    stride: int,
    size: tuple[int, int],
    mode: str = "random",
    num_clips: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Decode ``num_clips`` clips of ``path``: uint8 array (num_clips, frames, H, W, 3) with (H, W) = ``size``.

    Raises VideoDecodeError (naming the file) when the file cannot be opened or holds no decodable frame.
    """
    out_h, out_w = size
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            decoded = list(container.decode(container.streams.video[0]))
        if not decoded:
            raise VideoDecodeError(f"{path}: no decodable frame")
        idx = sample_clip_indices(len(decoded), frames, stride, mode, num_clips, rng)
        rh, rw = cover_size(decoded[0].height, decoded[0].width, out_h, out_w)
        top, left = (rh - out_h) // 2, (rw - out_w) // 2
        reformatter = VideoReformatter()  # one scaler context for all frames (10x faster than per-frame)
        converted = {}
        for i in np.unique(idx):
            img = reformatter.reformat(decoded[i], width=rw, height=rh, format="rgb24").to_ndarray()
            converted[int(i)] = img[top : top + out_h, left : left + out_w]
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"{path}: cannot decode ({type(err).__name__}: {err})") from err
    return np.stack([np.stack([converted[int(i)] for i in clip]) for clip in idx])


def write_video(path: str, frames: np.ndarray, fps: int = 25, codec: str = "mpeg4", bit_rate: int = 4_000_000):
    """Write uint8 frames (T, H, W, 3) to ``path`` (container from the extension: .avi, .mp4).

    Written to a temporary name and renamed, so an interrupted run never leaves a truncated video behind.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video({path}): expected uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"write_video({path}): height and width must be even for yuv420p, got {frames.shape[1:3]}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{os.getpid()}{ext}"
    with av.open(tmp, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bit_rate
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
