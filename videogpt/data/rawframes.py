"""Scale and centre-crop frames that are already in memory (BAIR, Moving MNIST, image folders) with the same
ffmpeg filter chain as decoded videos, so every data.format shares one resize rule.

The frames go to ffmpeg as rawvideo rgb24 on stdin and come back as rgb24 on stdout, through
`scale=S:S:force_original_aspect_ratio=increase:flags=area,crop=S:S` -- the chain of
`ffmpeg_io.decode_video` (short side to S with an area average when shrinking, then the centre S x S
square). The chain works frame by frame, so the frames are sent in pieces of at most CHUNK_BYTES (and a
new piece starts wherever the frame size changes): memory stays bounded for long image folders, and frames
of different sizes are each scaled by the same rule. Frames already S x S are returned unchanged, without
ffmpeg, so 64x64 datasets stored at 64 px keep their exact pixel values.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import ffmpeg
import numpy as np

from videogpt.data.ffmpeg_io import VideoError, _error_lines, _run, ffmpeg_exe

CHUNK_BYTES = 64 << 20


def _scale_chain(width: int, height: int, resolution: int) -> list[str]:
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}")
    stream = (stream.filter("scale", resolution, resolution, force_original_aspect_ratio="increase", flags="area")
              .filter("crop", resolution, resolution))
    return (stream.output("pipe:", format="rawvideo", pix_fmt="rgb24")
            .global_args("-nostdin", "-hide_banner", "-v", "error")
            .compile(cmd=ffmpeg_exe()))


def _scale_block(block: np.ndarray, resolution: int, timeout: float) -> np.ndarray:
    n, height, width, _ = block.shape
    if (height, width) == (resolution, resolution):
        return block
    out, err, returncode = _run(_scale_chain(width, height, resolution), timeout, stdin=block.tobytes())
    lines = _error_lines(err)
    if returncode != 0 or lines:
        raise VideoError(f"ffmpeg: {lines[-1] if lines else f'exit code {returncode}'}", "scaling raw frames")
    expected = n * resolution * resolution * 3
    if len(out) != expected:
        raise VideoError("ffmpeg: wrong number of scaled frames", f"{len(out)} bytes, expected {expected}")
    return np.frombuffer(out, np.uint8).reshape(n, resolution, resolution, 3)


def _blocks(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Consecutive frames of one size, at most CHUNK_BYTES (at least one frame) per block."""
    block: list[np.ndarray] = []
    size = 0
    for frame in frames:
        if block and (frame.shape != block[0].shape or size + frame.nbytes > CHUNK_BYTES):
            yield np.stack(block)
            block, size = [], 0
        block.append(frame)
        size += frame.nbytes
    if block:
        yield np.stack(block)


def scale_frames(frames: Iterable[np.ndarray] | np.ndarray, resolution: int, timeout: float = 120.0) -> np.ndarray:
    """uint8 RGB frames (H, W, 3) each -> (F, S, S, 3) uint8, S = resolution, scaled like decoded videos.

    `frames` may be an array (F, H, W, 3) or any iterable of (H, W, 3) arrays (sizes may differ); an
    iterable is consumed lazily, one block at a time. Raises VideoError if ffmpeg fails.
    """
    if isinstance(frames, np.ndarray):
        step = max(1, CHUNK_BYTES // max(1, frames[0].nbytes)) if len(frames) else 1
        blocks: Iterable[np.ndarray] = (frames[i:i + step] for i in range(0, len(frames), step))
    else:
        blocks = _blocks(frames)
    out = []
    for block in blocks:
        if block.dtype != np.uint8 or block.ndim != 4 or block.shape[-1] != 3:
            raise ValueError(f"expected uint8 RGB frames (H, W, 3), got {block.dtype} {block.shape[1:]}")
        out.append(_scale_block(np.ascontiguousarray(block), resolution, timeout))
    if not out:
        return np.zeros((0, resolution, resolution, 3), np.uint8)
    return out[0] if len(out) == 1 else np.concatenate(out)
