"""Pictures a person can look at in a second: contact sheets, grids of videos, animated GIFs."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from videogpt.fileio import atomic_path


def contact_sheet(rows: list[np.ndarray], max_frames: int = 16, pad: int = 2) -> np.ndarray:
    """Tile videos into one image: one video (T,H,W,3) uint8 per row, frames left to right."""
    if not rows:
        raise ValueError("contact_sheet: no videos given")
    t = min(max_frames, max(v.shape[0] for v in rows))
    h, w = rows[0].shape[1:3]
    sheet = np.full((len(rows) * (h + pad) + pad, t * (w + pad) + pad, 3), 255, np.uint8)
    for r, video in enumerate(rows):
        for c in range(min(t, video.shape[0])):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            sheet[y:y + h, x:x + w] = video[c]
    return sheet


def video_grid(videos: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Arrange N videos (N,T,H,W,3) into one video of grids (T, H', W', 3), for a GIF."""
    n, t, h, w, _ = videos.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.full((t, nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        y, x = pad + (i // ncols) * (h + pad), pad + (i % ncols) * (w + pad)
        grid[:, y:y + h, x:x + w] = videos[i]
    return grid


def save_png(path: str | Path, image: np.ndarray, upscale: int = 1) -> None:
    """Write an RGB uint8 image atomically (nearest-neighbour upscale keeps small frames readable)."""
    img = Image.fromarray(image)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def check_frames(frames: np.ndarray) -> np.ndarray:
    """One video as contiguous uint8 (T, H, W, 3), T >= 1; anything else is a ValueError."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected uint8 frames (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of (..., H, W, C) frames: small clips stay sharp on screen."""
    return frames if factor <= 1 else np.repeat(np.repeat(frames, factor, -3), factor, -2)


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """uint8 frames (T, H, W, 3) -> the bytes of a looping animated GIF (delays are in 1/100 s, >= 10 ms).

    Same frames give the same bytes, so a page or file embedding the GIF is reproducible."""
    frames = check_frames(frames)
    images = [Image.fromarray(frame) for frame in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(10, round(1000 / fps)), loop=0)
    return buf.getvalue()
