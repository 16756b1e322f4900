"""Video tensors and pixels, both ways.

Models see float video in [-0.5, 0.5], channels first: (3, T, H, W), or (B, 3, T, H, W) for a batch.
Stores, files and pictures hold uint8 pixels, channels last: (T, H, W, 3), or (N, T, H, W, 3).
"""
from __future__ import annotations

import numpy as np
import torch


def to_float(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (..., T, H, W, 3) -> float32 (..., 3, T, H, W) in [-0.5, 0.5]."""
    return torch.as_tensor(pixels).movedim(-1, -4).float().div_(255).sub_(0.5)


def to_uint8(video: torch.Tensor, *, truncate: bool = False) -> torch.Tensor:
    """float (..., 3, T, H, W) -> uint8 (..., T, H, W, 3): clamp to [-0.5, 0.5], shift to [0, 1], scale to
    [0, 255] and round; truncate=True drops the fraction instead, as VideoGPT's FVD code does (its
    `astype(uint8)`; see videogpt.metrics.protocol)."""
    x = (video.float().clamp(-0.5, 0.5) + 0.5) * 255
    return (x.trunc() if truncate else x.round()).to(torch.uint8).movedim(-4, -1)
