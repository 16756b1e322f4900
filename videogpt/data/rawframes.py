"""Scale and centre-crop frames that are already in memory (BAIR, Moving MNIST, image folders) with the same
ffmpeg filter chain as decoded videos (`ffmpeg_io.scale_raw_frames`), so every data.format shares one resize
rule. The chain works frame by frame, so the frames are sent in pieces of at most CHUNK_BYTES (and a
new piece starts wherever the frame size changes): memory stays bounded for long image folders, and frames
of different sizes are each scaled by the same rule. Frames already S x S are returned unchanged, without
ffmpeg, so 64x64 datasets stored at 64 px keep their exact pixel values.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from videogpt.data.ffmpeg_io import scale_raw_frames

CHUNK_BYTES = 64 << 20


def _scale_block(block: np.ndarray, resolution: int, timeout: float) -> np.ndarray:
    if block.shape[1:3] == (resolution, resolution):
        return block
    return scale_raw_frames(block, resolution, timeout)


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
