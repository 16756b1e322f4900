"""Pictures a person can look at in a second: contact sheets of video frames."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
