"""C3D fine-tuned on UCF-101 (TGANv2's `C3DVersion1UCF101`): the classifier behind the Inception Score of video
generators on UCF-101 (VideoGPT's Table 2), and the score itself.

Written from the published facts (spec §3.5); no reference code was copied.

Weights: TGANv2's converted Chainer files, read with `np.load(allow_pickle=False)` (nothing is unpickled):
`conv3d_deepnetA_ucf.npz` holds "<layer>/W" and "<layer>/b" for conv1a, conv2a, conv3a, conv3b, conv4a, conv4b,
conv5a, conv5b (W: (out, in, 3, 3, 3)), fc6, fc7, fc8 (W: (out, in)); `mean2.npz` holds "mean", the mean clip
(3, 16, 128, 171) in BGR 0..255 (C3D's Sports-1M mean at 128 x 171; a leading axis of 1 is accepted), read from
the same folder.

What the network does to a video (the generator's output mapped to [-1, 1], (N, 3, 16, H, W), RGB):
1. RGB -> BGR and x 128 (TGANv2 does both with one fixed 1x1x1 convolution): [-128, 128];
2. every frame resized to 112 x 112, bilinear with aligned corners (Chainer's `resize_images`) [inferred: the
   Chainer default; the spec says "bilinear"];
3. + (128 - the mean clip cropped to [8:120, 8:120], as TGANv2 does: centred in height, off-centre in the
   171-wide mean's width): the pixel in 0..256 minus the mean;
4. eight 3x3x3 convolutions (padding 1, ReLU), max-pooled (1,2,2) after conv1a and 2x2x2 after conv2a, conv3b,
   conv4b and conv5b, Chainer's `cover_all` (ceil mode: the last pool takes 7x7 to 4x4), then fc6 8192->4096,
   fc7 4096->4096 (ReLU, dropout off in eval) and fc8 -> 101 logits; softmax gives p(y|x).

Inception Score: IS = exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the samples, eps = 1e-20 inside
the logarithms; TGANv2 reports the mean ± std over 10 loops of 2,048 samples.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_FILE, MEAN_FILE = "conv3d_deepnetA_ucf.npz", "mean2.npz"
N_CLASSES, N_FRAMES, INPUT_SIZE, MEAN_SIZE = 101, 16, 112, 128
IS_EPS = 1e-20
# (name, in channels, out channels, the max-pool after it or None)
CONVS = (("conv1a", 3, 64, (1, 2, 2)), ("conv2a", 64, 128, (2, 2, 2)), ("conv3a", 128, 256, None),
         ("conv3b", 256, 256, (2, 2, 2)), ("conv4a", 256, 512, None), ("conv4b", 512, 512, (2, 2, 2)),
         ("conv5a", 512, 512, None), ("conv5b", 512, 512, (2, 2, 2)))
FCS = (("fc6", 512 * 4 * 4, 4096), ("fc7", 4096, 4096), ("fc8", 4096, N_CLASSES))


class C3DWeightsError(RuntimeError):
    """The C3D files are missing, unreadable, or not in the published layout."""


class C3D(nn.Module):
    """(N, 3, 16, H, W) float in [-1, 1], RGB -> (N, 101) logits. `mean` is the cropped mean clip (BGR)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleDict({name: nn.Conv3d(cin, cout, 3, padding=1) for name, cin, cout, _ in CONVS})
        self.fcs = nn.ModuleDict({name: nn.Linear(cin, cout) for name, cin, cout in FCS})
        self.register_buffer("mean", torch.zeros(3, N_FRAMES, INPUT_SIZE, INPUT_SIZE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        if c != 3 or t != N_FRAMES:
            raise ValueError(f"C3D expects (N, 3, {N_FRAMES}, H, W) videos, got {tuple(x.shape)}")
        x = x.flip(1) * 128.0                                              # RGB -> BGR, [-128, 128]
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        frames = F.interpolate(frames, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=True)
        x = frames.reshape(n, t, c, INPUT_SIZE, INPUT_SIZE).transpose(1, 2)
        x = x + (128.0 - self.mean)
        for name, _, _, pool in CONVS:
            x = F.relu(self.convs[name](x))
            if pool is not None:
                x = F.max_pool3d(x, pool, stride=pool, ceil_mode=True)   # Chainer's cover_all
        x = x.flatten(1)
        for name, _, _ in FCS[:-1]:
            x = F.relu(self.fcs[name](x))
        return self.fcs["fc8"](x)


def published_shapes() -> dict[str, tuple[int, ...]]:
    """The keys and shapes of conv3d_deepnetA_ucf.npz."""
    shapes = {}
    for name, cin, cout, _ in CONVS:
        shapes[f"{name}/W"], shapes[f"{name}/b"] = (cout, cin, 3, 3, 3), (cout,)
    for name, cin, cout in FCS:
        shapes[f"{name}/W"], shapes[f"{name}/b"] = (cout, cin), (cout,)
    return shapes


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise C3DWeightsError(f"{path}: not found; put TGANv2's {WEIGHTS_FILE} and {MEAN_FILE} (the files of "
                              "the v1.0 release of github.com/rezoo/tgan2, which TGANv2's README links) in one "
                              "folder and set eval.c3d_weights to the first")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # an HTML error page, a truncated download, a pickle
        raise C3DWeightsError(f"{path}: not a readable .npz of arrays ({type(e).__name__}: {e})") from None


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of conv3d_deepnetA_ucf.npz, checked against the published keys and shapes."""
    path = Path(path)
    arrays = _read_npz(path)
    want = published_shapes()
    missing = sorted(set(want) - set(arrays))
    bad = [f"{k}: {arrays[k].shape} vs {want[k]}" for k in sorted(set(want) & set(arrays))
           if tuple(arrays[k].shape) != want[k]]
    if missing or bad:
        raise C3DWeightsError(f"{path}: not the layout of TGANv2's {WEIGHTS_FILE}: "
                              + "; ".join(filter(None, [f"missing {', '.join(missing[:5])}" if missing else "",
                                                        f"shapes {', '.join(bad[:5])}" if bad else ""])))
    return arrays


def read_mean(path: str | Path) -> np.ndarray:
    """The mean clip of mean2.npz as (3, 16, 128, W), checked."""
    path = Path(path)
    mean = _read_npz(path).get("mean")
    # The released mean2.npz is C3D's Sports-1M mean clip at 128 x 171 (scripts that read it reshape it to
    # (3, 1, 16, 128, 171)); TGANv2 takes [8:120, 8:120] of it as it is, i.e. off-centre along the width.
    if mean is not None and mean.size % (3 * N_FRAMES * MEAN_SIZE) == 0:
        mean = mean.reshape(3, N_FRAMES, MEAN_SIZE, -1)
    if mean is None or mean.shape[-1] < 8 + INPUT_SIZE:
        raise C3DWeightsError(f"{path}: expected 'mean' of shape (3, {N_FRAMES}, {MEAN_SIZE}, 171) "
                              f"(or at least {8 + INPUT_SIZE} wide), got {None if mean is None else mean.shape}")
    return mean


def load_c3d(weights_path: str | Path) -> C3D:
    """C3D with TGANv2's weights (and mean2.npz from the same folder), in eval mode without grads."""
    arrays = read_weights(weights_path)
    mean = read_mean(Path(weights_path).with_name(MEAN_FILE))
    model = C3D()
    state = {"mean": torch.from_numpy(np.ascontiguousarray(mean[:, :, 8:8 + INPUT_SIZE, 8:8 + INPUT_SIZE],
                                                           dtype=np.float32))}
    for group, layers in (("convs", CONVS), ("fcs", FCS)):
        for name, *_ in layers:
            state[f"{group}.{name}.weight"] = torch.from_numpy(arrays[f"{name}/W"].astype(np.float32))
            state[f"{group}.{name}.bias"] = torch.from_numpy(arrays[f"{name}/b"].astype(np.float32))
    model.load_state_dict(state, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model


@torch.inference_mode()
def class_probabilities(model: C3D, videos_uint8, batch_size: int = 16, device=None) -> np.ndarray:
    """uint8 videos (N, 16, H, W, 3) -> p(y|x) (N, 101) float64, the videos mapped to [-1, 1] as 2*x/255 - 1."""
    device = device or next(model.parameters()).device
    out = []
    for start in range(0, len(videos_uint8), batch_size):
        batch = torch.as_tensor(np.asarray(videos_uint8[start:start + batch_size]))
        if batch.dtype != torch.uint8 or batch.ndim != 5 or batch.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, T, H, W, 3) videos, got {batch.dtype} {tuple(batch.shape)}")
        x = batch.to(device).permute(0, 4, 1, 2, 3).float() * (2.0 / 255.0) - 1.0
        out.append(torch.softmax(model(x).double(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES))


def inception_score(probs) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of class probabilities (N, K), eps 1e-20 inside the logarithms."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or len(p) < 1:
        raise ValueError(f"expected class probabilities (N, K), got shape {p.shape}")
    p_y = p.mean(axis=0, keepdims=True)
    kl = (p * (np.log(p + IS_EPS) - np.log(p_y + IS_EPS))).sum(axis=1).mean()
    return float(math.exp(kl))


def inception_score_loops(probs, per_loop: int) -> list[float]:
    """IS of consecutive groups of `per_loop` samples (TGANv2: loops of 2,048; a short last group is dropped)."""
    p = np.asarray(probs, np.float64)
    n_loops = len(p) // per_loop
    if n_loops < 1:
        raise ValueError(f"{len(p)} samples are fewer than one loop of {per_loop}")
    return [inception_score(p[i * per_loop:(i + 1) * per_loop]) for i in range(n_loops)]


__all__ = ["C3D", "C3DWeightsError", "load_c3d", "read_weights", "read_mean", "published_shapes", "class_probabilities", "inception_score",
           "inception_score_loops", "WEIGHTS_FILE", "MEAN_FILE"]
