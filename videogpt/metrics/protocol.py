"""The two published I3D feature protocols ("flavours") of FVD, and everything that differs between them.

- `tf`: the original FVD (TF-Hub i3d-kinetics-400 in TensorFlow): BatchNorm eps 1e-3 (Sonnet's default,
  the value the weights were trained with); every frame resized straight to 224x224 with TF1's legacy
  `resize_bilinear` (no half-pixel offset: source position = dst * in/out); 2*x/255 - 1. StyleGAN-V's
  TorchScript port computes the same numbers (up to its resize). Generated videos reach uint8 by rounding.
- `videogpt`: the PyTorch port that produced VideoGPT's and TATS's published FVDs: BatchNorm eps 1e-5;
  x/255, shorter side resized to 224 (torch bilinear, align_corners=False, no antialias; the longer side
  ceil-ed), centre crop 224x224, (x - 0.5) * 2; float videos reach uint8 by truncation, real clips too
  (their x/255 - 0.5 float32 round trip turns 63 of the 256 values v into v - 1).

Both average the 400 pre-softmax logits over time. Which flavour made a number is recorded beside it
(`protocol(flavour)`), and the real-statistics cache is keyed by it: the two are not comparable.
Written from the published facts about both implementations; no reference code was copied.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from videogpt.video import to_float, to_uint8

INPUT_SIZE = 224
MIN_FRAMES = 9  # the 3 temporal stride-2 stages must leave >= 2 steps for the (2,7,7) average pool
DEFAULT_FLAVOUR = "tf"

# What changes the numbers between the flavours. `protocol()` adds what both share.
_FLAVOURS = {
    "tf": {
        "bn_eps": 1e-3,
        "resize": f"every frame to {INPUT_SIZE}x{INPUT_SIZE}, TF1 legacy bilinear (half_pixel_centers=False, "
                  "align_corners=False: source = dst * in/out)",
        "input_range": "[-1,1] = 2*x/255 - 1",
        "generated_uint8": "round(clamp(x + 0.5, 0, 1) * 255)",
        "real_uint8": "as stored",
        "reference": "FVD-TF (TF-Hub i3d-kinetics-400/1); StyleGAN-V's I3D port computes the same",
    },
    "videogpt": {
        "bn_eps": 1e-5,
        "resize": f"shorter side to {INPUT_SIZE} (torch bilinear, align_corners=False, no antialias; longer "
                  f"side ceil), centre crop {INPUT_SIZE}x{INPUT_SIZE}",
        "input_range": "[-1,1] = (x/255 - 0.5) * 2",
        "generated_uint8": "trunc(clamp(x + 0.5, 0, 1) * 255)",
        "real_uint8": "trunc(((v/255 - 0.5) + 0.5) * 255) in float32",
        "reference": "VideoGPT / TATS PyTorch port (i3d_pretrained_400.pt, BN eps 1e-5)",
    },
}
FLAVOURS = tuple(_FLAVOURS)


def check_flavour(flavour: str) -> str:
    if flavour not in _FLAVOURS:
        raise ValueError(f"unknown I3D protocol {flavour!r}; expected one of {', '.join(FLAVOURS)}")
    return flavour


def bn_eps(flavour: str) -> float:
    return _FLAVOURS[check_flavour(flavour)]["bn_eps"]


def protocol(flavour: str) -> dict:
    """Everything about the feature extractor that changes the numbers (the caller adds the weights'
    identity and the sample-set protocol)."""
    return {"i3d_protocol": check_flavour(flavour), "network": "i3d-inception-v1-kinetics400",
            "feature": "logits-400-mean-over-time", "input_size": INPUT_SIZE,
            "maxpool_same_padding": "-inf (same as zeros: every pool input is post-ReLU)",
            **_FLAVOURS[flavour]}


# --------------------------------------------------------------------------------------------
# uint8 conversions (the generator's side of the protocol)


def generated_to_uint8(video: torch.Tensor, flavour: str) -> torch.Tensor:
    """Model output (..., 3, T, H, W) float in [-0.5, 0.5] -> uint8 (..., T, H, W, 3) the flavour's way:
    `tf` rounds, `videogpt` truncates (the port's `astype(uint8)`)."""
    return to_uint8(video, truncate=check_flavour(flavour) == "videogpt")


def real_to_uint8(videos, flavour: str):
    """Stored uint8 real clips (..., T, H, W, 3) -> the uint8 values the flavour's I3D sees (same type).

    `tf`: unchanged. `videogpt`: the port loads clips as float32 v/255 - 0.5 and converts them back with
    (x + 0.5) * 255 truncated, which lowers 63 of the 256 values by one (e.g. 1 -> 0).
    """
    if check_flavour(flavour) == "tf":
        return videos
    t = torch.as_tensor(videos)
    if t.dtype != torch.uint8:
        raise TypeError(f"real_to_uint8 expects uint8 clips, got {t.dtype}")
    out = to_uint8(to_float(t), truncate=True)  # the float round trip of the models' range
    return out.numpy() if isinstance(videos, np.ndarray) else out


# --------------------------------------------------------------------------------------------
# Preprocessing: uint8 videos -> I3D input


def _tf1_bilinear_weights(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) interpolation matrix of TF1 `resize_bilinear` (legacy: source = dst * n_in/n_out,
    lower = floor, upper = min(lower + 1, n_in - 1))."""
    src = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    lower = np.floor(src).astype(np.int64)
    upper = np.minimum(lower + 1, n_in - 1)
    frac = src - lower
    w = np.zeros((n_out, n_in), np.float64)
    np.add.at(w, (np.arange(n_out), lower), 1.0 - frac)
    np.add.at(w, (np.arange(n_out), upper), frac)
    return torch.from_numpy(w).float()


def _resize_tf(frames: torch.Tensor) -> torch.Tensor:
    """(M, 3, H, W) float -> (M, 3, 224, 224), TF1 legacy bilinear (separable: rows, then columns)."""
    h, w = frames.shape[-2:]
    if (h, w) == (INPUT_SIZE, INPUT_SIZE):
        return frames
    wh, ww = _tf1_bilinear_weights(h, INPUT_SIZE), _tf1_bilinear_weights(w, INPUT_SIZE)
    return torch.einsum("oh,mchw,pw->mcop", wh, frames, ww)


def _resize_crop_videogpt(frames: torch.Tensor) -> torch.Tensor:
    """(M, 3, H, W) float -> (M, 3, 224, 224): shorter side to 224 (longer side ceil), centre crop."""
    h, w = frames.shape[-2:]
    scale = INPUT_SIZE / min(h, w)
    size = (INPUT_SIZE, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), INPUT_SIZE)
    if size != (h, w):
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=False)
    h, w = frames.shape[-2:]
    top, left = (h - INPUT_SIZE) // 2, (w - INPUT_SIZE) // 2
    return frames[..., top:top + INPUT_SIZE, left:left + INPUT_SIZE]


def preprocess(videos, flavour: str = DEFAULT_FLAVOUR) -> torch.Tensor:
    """uint8 videos (N, T, H, W, 3) -> float32 (N, 3, T, 224, 224) in [-1, 1], the flavour's way.

    uint8 values are what the flavour's I3D reads (see `real_to_uint8` / `generated_to_uint8`).
    """
    check_flavour(flavour)
    x = torch.as_tensor(videos)
    if x.dtype != torch.uint8:
        raise TypeError(f"preprocess expects uint8 videos in [0, 255], got dtype {x.dtype}; "
                        "convert explicitly (float ranges differ between modules)")
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"preprocess expects (N, T, H, W, 3) channels-last videos, got {tuple(x.shape)}")
    n, t, h, w, _ = x.shape
    if t < MIN_FRAMES:
        raise ValueError(f"I3D needs at least {MIN_FRAMES} frames per video (the (2,7,7) average pool after "
                         f"8x temporal downsampling); got {t}")
    frames = x.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float()  # (N*T, 3, H, W)
    if flavour == "tf":
        frames = _resize_tf(frames) * (2.0 / 255.0) - 1.0
    else:
        frames = (_resize_crop_videogpt(frames / 255.0) - 0.5) * 2.0
    return frames.reshape(n, t, 3, INPUT_SIZE, INPUT_SIZE).permute(0, 2, 1, 3, 4).contiguous()


__all__ = ["FLAVOURS", "DEFAULT_FLAVOUR", "INPUT_SIZE", "MIN_FRAMES", "check_flavour", "bn_eps", "protocol",
           "generated_to_uint8", "real_to_uint8", "preprocess"]
