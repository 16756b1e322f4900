"""FVD protocols: the named protocols (`FVDProtocol`, one declared object each) and the I3D feature
flavours they use, with everything that changes the number.

A named protocol (`eval.fvd_protocol`) fixes the sample counts, which real clips (subset rule, windows), the
I3D flavour, the covariance estimator and the matrix square root, and names the published numbers it
reproduces. Every step reads it: the fvd_real_stats stage (subsets, windows, statistics), the sample stage
(how many videos), the Fréchet distance (estimator, square root), eval.json (its `record`) and the report.

I3D flavours (the network and its input preprocessing):
- `tf`: the original FVD (TF-Hub i3d-kinetics-400 in TensorFlow): BatchNorm eps 1e-3 (Sonnet's default,
  the value the weights were trained with); every frame resized straight to 224x224 with TF1's legacy
  `resize_bilinear` (no half-pixel offset: source position = dst * in/out); 2*x/255 - 1. Generated videos
  reach uint8 by rounding. StyleGAN-V's TorchScript port does NOT compute the same numbers: it resizes inside
  the network with another kernel (its authors: equal "up to the upsampling operation") — see `stylegan_v`.
- `videogpt`: the PyTorch port that produced VideoGPT's and TATS's published FVDs: BatchNorm eps 1e-5;
  x/255, shorter side resized to 224 (torch bilinear, align_corners=False, no antialias; the longer side
  ceil-ed), centre crop 224x224, (x - 0.5) * 2; float videos reach uint8 by truncation, real clips too
  (their x/255 - 0.5 float32 round trip turns 63 of the 256 values v into v - 1).
- `stylegan_v`: StyleGAN-V's `i3d_torchscript.pt` (opt-in, pinned SHA-256; videogpt.metrics.i3d), fed
  uint8 values as float B x 3 x T x H x W with rescale=True, resize=True (its own resize to 224x224) and
  return_features=True; generated videos reach uint8 by rounding (SGV: x * 127.5 + 128, clamped).

All average (or return) the 400 pre-softmax logits over time. Written from the published facts about the
implementations; no reference code was copied.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

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
        "reference": "FVD-TF (TF-Hub i3d-kinetics-400/1), as ported to PyTorch here; StyleGAN-V's TorchScript "
                     "port differs from it (its own resize inside the network)",
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
    "stylegan_v": {
        "bn_eps": None,
        "resize": "inside StyleGAN-V's TorchScript network (forward(x, rescale=True, resize=True, "
                  "return_features=True)), every frame to 224x224",
        "input_range": "uint8 values as float in [0, 255]; the network rescales them to [-1, 1]",
        "generated_uint8": "round(clamp(x + 0.5, 0, 1) * 255) (SGV: x * 127.5 + 128 clamped, x in [-1, 1])",
        "real_uint8": "as stored",
        "reference": "StyleGAN-V's i3d_torchscript.pt (Skorokhodov et al. 2022)",
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
    if check_flavour(flavour) != "videogpt":
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
    """uint8 videos (N, T, H, W, 3) -> float32 (N, 3, T, 224, 224) in [-1, 1], the flavour's way
    (`stylegan_v`: float32 (N, 3, T, H, W) in [0, 255], which its network resizes and rescales).

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
    if flavour == "stylegan_v":  # the TorchScript network rescales and resizes itself
        return frames.reshape(n, t, 3, h, w).permute(0, 2, 1, 3, 4).contiguous()
    if flavour == "tf":
        frames = _resize_tf(frames) * (2.0 / 255.0) - 1.0
    else:
        frames = (_resize_crop_videogpt(frames / 255.0) - 0.5) * 2.0
    return frames.reshape(n, t, 3, INPUT_SIZE, INPUT_SIZE).permute(0, 2, 1, 3, 4).contiguous()


# --------------------------------------------------------------------------------------------
# Named FVD protocols

WINDOW_FRAMES = 16  # every named protocol compares 16-frame videos


@dataclass(frozen=True)
class FVDProtocol:
    """One published way of computing FVD, in every detail that changes the number.

    n_real / n_generated: videos per trial (the anchor's counts). real_subset: 'fixed' = one seeded random
    subset of the split kept for every trial (VideoGPT draws its 256 real clips once); 'per_trial' = a new
    seeded subset per trial; 'first_n' = the first n_real clips of the split in store order (StyleGAN-V).
    real_split: the clip-store split the real clips come from. window: 'random' = a seeded random
    WINDOW_FRAMES-frame window per real clip (frames 0..T-1 when the stored clip is not longer);
    'first' = its first frames. i3d: the flavour (network + preprocessing, see the module doc).
    covariance_ddof: 1 = unbiased (÷N−1), 0 = population (÷N). sqrt: 'eigh' = Tr sqrt of the symmetric
    S1^1/2 S2 S1^1/2 by eigenvalues; 'sqrtm' = real part of scipy.linalg.sqrtm(S1 @ S2).
    comparable_with: the published numbers a run matching every field reproduces.
    """
    name: str
    n_real: int
    n_generated: int
    real_subset: str
    real_split: str
    window: str
    i3d: str
    covariance_ddof: int
    sqrt: str
    comparable_with: tuple[str, ...]
    notes: str = ""

    def with_counts(self, n_real: int | None, n_generated: int | None) -> "FVDProtocol":
        """The protocol with eval.n_real / eval.n_generated applied (null: the anchor's count; n_generated
        null: equal to the real count)."""
        real = self.n_real if n_real is None else n_real
        gen = real if n_generated is None else n_generated
        return replace(self, n_real=real, n_generated=gen)

    def deviations(self) -> list[str]:
        """How this (count-adjusted) protocol differs from its named anchor; empty when it matches."""
        anchor = PROTOCOLS[self.name]
        out = [f"{k}={getattr(self, k)} (the anchor uses {getattr(anchor, k)}; FVD depends on the sample count)"
               for k in ("n_real", "n_generated") if getattr(self, k) != getattr(anchor, k)]
        return out + ([] if anchor.comparable_with else [anchor.notes])

    def record(self, extra_deviations=()) -> dict:
        """The protocol as written into eval.json: every field, what it is comparable with and, if nothing,
        why. A number computed with fewer samples (or any other deviation) is comparable with nothing."""
        why = self.deviations() + list(extra_deviations)
        fields = {k: v for k, v in asdict(self).items() if k not in ("name", "i3d", "comparable_with")}
        return {"fvd_protocol": self.name, **fields, **protocol(self.i3d), "window_frames": WINDOW_FRAMES,
                "comparable_with": [] if why else list(self.comparable_with),
                "not_comparable_because": why or None}


PROTOCOLS = {
    "videogpt": FVDProtocol(
        name="videogpt", n_real=256, n_generated=256, real_subset="fixed", real_split="test", window="random",
        i3d="videogpt", covariance_ddof=1, sqrt="eigh", comparable_with=("VideoGPT (Yan et al. 2021)",),
        notes="VideoGPT's compute_fvd: the first test batch of 256 (random clips, each a random 16-frame window, "
              "the same in every trial), 256 samples per trial, unbiased covariance, float64 here (the port: "
              "float32 SVD, which agrees to ~1e-7 relative)"),
    "stylegan_v": FVDProtocol(
        name="stylegan_v", n_real=2048, n_generated=2048, real_subset="first_n", real_split="train",
        window="random", i3d="stylegan_v", covariance_ddof=0, sqrt="sqrtm",
        comparable_with=("StyleGAN-V (Skorokhodov et al. 2022)",),
        notes="StyleGAN-V's fvd2048_16f: the first 2048 videos of the dataset folder it trains on (here the "
              "first 2048 clips of the train split in store order), a random 16-frame offset each, 2048 "
              "unconditional samples, population covariance, scipy sqrtm(S1 S2) real part"),
    "tf_hub": FVDProtocol(
        name="tf_hub", n_real=256, n_generated=256, real_subset="fixed", real_split="test", window="random",
        i3d="tf", covariance_ddof=1, sqrt="eigh", comparable_with=(),
        notes="the original FVD's network and preprocessing (TF-Hub i3d-kinetics-400, ported); the spec states "
              "no sample counts for it, so 256/256 (BAIR's usual) is a choice and no published number is "
              "claimed"),
}
PROTOCOL_NAMES = tuple(PROTOCOLS)


def fvd_protocol(name: str, n_real: int | None = None, n_generated: int | None = None) -> FVDProtocol:
    """The named protocol (eval.fvd_protocol) with the counts eval.n_real / eval.n_generated applied."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown FVD protocol {name!r}; expected one of {', '.join(PROTOCOL_NAMES)}")
    return PROTOCOLS[name].with_counts(n_real, n_generated)


__all__ = ["FLAVOURS", "DEFAULT_FLAVOUR", "INPUT_SIZE", "MIN_FRAMES", "check_flavour", "bn_eps", "protocol",
           "generated_to_uint8", "real_to_uint8", "preprocess", "FVDProtocol", "PROTOCOLS", "PROTOCOL_NAMES",
           "WINDOW_FRAMES", "fvd_protocol"]
