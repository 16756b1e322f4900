"""I3D (Inception-v1 inflated to 3D, Kinetics-400 head): the FVD feature extractor.

Written from the published I3D layer table (Carreira & Zisserman 2017, Inception-v1 inflated to 3D);
no reference code was copied.
Module, parameter and buffer names follow the published converted TF-Hub state dict
`i3d_pretrained_400.pt` (287 tensors, e.g. `Conv3d_1a_7x7.conv3d.weight`, `Mixed_5c.b1b.bn.running_var`,
`logits.conv3d.weight` (400,1024,1,1,1), `logits.conv3d.bias`), so `load_state_dict(sd, strict=True)` works.

Feature = the 400 pre-softmax logits averaged over time: the TF graph tensor `RGB/inception_i3d/Mean:0`
that the TF FVD uses ("kinetics-i3d-400-logits").

A model is built for one protocol flavour (videogpt.metrics.protocol): `tf` (BatchNorm eps 1e-3, the
original FVD) or `videogpt` (eps 1e-5, the VideoGPT/TATS port); `i3d_features` preprocesses the videos
the same flavour's way, so the two can never be mixed. SAME max-pooling pads with -inf (padding never
wins, as in TF); the PyTorch port pads with 0, identical here because every pool input is post-ReLU.
"""
from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videogpt.distributed import inference_autocast, to_device
from videogpt.metrics.protocol import DEFAULT_FLAVOUR, MIN_FRAMES, bn_eps, preprocess

MIN_SPATIAL = 193       # 5 spatial stride-2 stages must leave >= 7 pixels for the (2,7,7) average pool
NUM_CLASSES = 400
N_PUBLISHED_TENSORS = 287  # tensors in i3d_pretrained_400.pt (no num_batches_tracked)

# Inception module widths: (in_channels, [b0, b1a, b1b, b2a, b2b, b3b]) from the I3D layer table.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class I3DWeightsError(RuntimeError):
    """The I3D weights file is missing, unsafe, unreadable, or not in the published layout."""


def _triple(v) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


def _same_pad(sizes, kernel, stride) -> list[int]:
    """F.pad argument for TF 'SAME' padding of (T,H,W): output = ceil(size/stride); extra pixel at the back."""
    pad = []
    for size, k, s in zip(sizes, kernel, stride):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pad.append((total // 2, total - total // 2))
    (t0, t1), (h0, h1), (w0, w1) = pad
    return [w0, w1, h0, h1, t0, t1]  # F.pad lists the last dimension first


class Unit3D(nn.Module):
    """SAME-padded Conv3d (no bias) -> BatchNorm3d(eps=bn_eps) -> ReLU; the logits unit (bn_eps=None,
    relu=False, bias=True) is a conv with bias only."""

    def __init__(self, cin: int, cout: int, kernel=1, stride=1, *, bn_eps: float | None, relu: bool = True,
                 bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.relu = _triple(kernel), _triple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=bn_eps) if bn_eps is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = _same_pad(x.shape[2:], self.kernel, self.stride)
        if any(pad):
            x = F.pad(x, pad)
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max-pool with TF 'SAME' padding (padded cells are -inf, so they never win, as in TF)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = _same_pad(x.shape[2:], self.kernel, self.stride)
        if any(pad):
            x = F.pad(x, pad, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Branches b0: 1x1x1; b1: 1x1x1 -> 3x3x3; b2: 1x1x1 -> 3x3x3; b3: 3x3x3 max-pool (stride 1) -> 1x1x1."""

    def __init__(self, cin: int, widths, *, bn_eps: float):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = widths
        self.b0 = Unit3D(cin, c0, 1, bn_eps=bn_eps)
        self.b1a = Unit3D(cin, c1a, 1, bn_eps=bn_eps)
        self.b1b = Unit3D(c1a, c1b, 3, bn_eps=bn_eps)
        self.b2a = Unit3D(cin, c2a, 1, bn_eps=bn_eps)
        self.b2b = Unit3D(c2a, c2b, 3, bn_eps=bn_eps)
        self.b3a = MaxPool3dSame(3, 1)
        self.b3b = Unit3D(cin, c3b, 1, bn_eps=bn_eps)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class I3D(nn.Module):
    """Input (B, 3, T, 224, 224) float in [-1, 1], T >= 9; output (B, 400) logits averaged over time.

    `flavour` ('tf' | 'videogpt') fixes the BatchNorm eps; `i3d_features` reads it to preprocess alike.
    Inference only: the original's dropout before the logits is the identity in eval mode and is left out.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, flavour: str = DEFAULT_FLAVOUR):
        super().__init__()
        if flavour not in ("tf", "videogpt"):  # stylegan_v is StyleGAN-V's own network (load_stylegan_v_i3d)
            raise ValueError(f"I3D is built for the 'tf' or 'videogpt' flavour, not {flavour!r}")
        self.flavour = flavour
        e = bn_eps(flavour)
        self.Conv3d_1a_7x7 = Unit3D(3, 64, 7, 2, bn_eps=e)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, 1, bn_eps=e)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, 3, bn_eps=e)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"], bn_eps=e)
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"], bn_eps=e)
        self.MaxPool3d_4a_3x3 = MaxPool3dSame(3, 2)
        self.Mixed_4b = InceptionModule(*_MIXED["Mixed_4b"], bn_eps=e)
        self.Mixed_4c = InceptionModule(*_MIXED["Mixed_4c"], bn_eps=e)
        self.Mixed_4d = InceptionModule(*_MIXED["Mixed_4d"], bn_eps=e)
        self.Mixed_4e = InceptionModule(*_MIXED["Mixed_4e"], bn_eps=e)
        self.Mixed_4f = InceptionModule(*_MIXED["Mixed_4f"], bn_eps=e)
        self.MaxPool3d_5a_2x2 = MaxPool3dSame(2, 2)
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"], bn_eps=e)
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"], bn_eps=e)
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=1)  # VALID
        self.logits = Unit3D(self.Mixed_5c.out_channels, num_classes, 1, bn_eps=None, relu=False,
                             bias=True)
        self._trunk = [
            self.Conv3d_1a_7x7, self.MaxPool3d_2a_3x3, self.Conv3d_2b_1x1, self.Conv3d_2c_3x3,
            self.MaxPool3d_3a_3x3, self.Mixed_3b, self.Mixed_3c, self.MaxPool3d_4a_3x3, self.Mixed_4b,
            self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f, self.MaxPool3d_5a_2x2,
            self.Mixed_5b, self.Mixed_5c,
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D expects (B, 3, T, H, W), got {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        if t < MIN_FRAMES or min(h, w) < MIN_SPATIAL:
            raise ValueError(f"I3D needs >= {MIN_FRAMES} frames and >= {MIN_SPATIAL}x{MIN_SPATIAL} pixels "
                             f"(224x224 is the protocol); got T={t}, H={h}, W={w}")
        for layer in self._trunk:
            x = layer(x)
        x = self.logits(self.avg_pool(x))      # (B, 400, T', 1, 1)
        return x.flatten(2).mean(dim=2)         # squeeze H, W; mean over time -> (B, 400)


# --------------------------------------------------------------------------------------------
# Weights


def expected_state_keys(model: nn.Module | None = None) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the published file: the model's state dict minus `num_batches_tracked`."""
    model = model if model is not None else I3D()
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip whose record holds compiled code (`<name>/code/...`)."""
    import zipfile
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in f"/{n}" for n in z.namelist())


def load_i3d(path: str | Path, flavour: str = DEFAULT_FLAVOUR, map_location="cpu") -> I3D:
    """Build the I3D of `flavour`, load `i3d_pretrained_400.pt` (strict), return it in eval mode without grads.

    Only plain tensor state dicts are accepted (torch.load(weights_only=True)); a pickle that would run
    code is refused with I3DWeightsError, as is a state dict with missing/unexpected keys or wrong shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise I3DWeightsError(f"{path}: I3D weights not found; fetch them with `python -m videogpt.download i3d` "
                              "(or copy i3d_pretrained_400.pt there) and set eval.i3d_weights")
    if _is_torchscript(path):  # torch.load would hand it to torch.jit.load, i.e. run it, even with weights_only
        raise I3DWeightsError(f"{path}: eval.i3d_weights: refused: a TorchScript archive (a program, not plain "
                              "weights); only StyleGAN-V's pinned i3d_torchscript.pt is accepted, under "
                              "eval.fvd_protocol stylegan_v with eval.allow_i3d_torchscript: true")
    try:
        sd = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise I3DWeightsError(
            f"{path}: refused to load: the file holds pickled objects other than tensors (a plain state "
            f"dict is required; unpickling arbitrary objects could run code). Details: {e}") from None
    except Exception as e:  # truncated download, HTML error page, not a torch file
        raise I3DWeightsError(f"{path}: not a readable torch state dict ({type(e).__name__}: {e})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise I3DWeightsError(f"{path}: expected a flat dict of tensors (the published i3d_pretrained_400.pt), "
                              f"got {type(sd).__name__}")
    model = I3D(flavour=flavour)
    expected = expected_state_keys(model)
    given = {k for k in sd if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(expected) - given), sorted(given - set(expected))
    bad_shape = [f"{k}: file {tuple(sd[k].shape)} vs model {expected[k]}"
                 for k in sorted(given & set(expected)) if tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or bad_shape:
        def head(xs):
            return ", ".join(xs[:5]) + (f" ... ({len(xs)} in all)" if len(xs) > 5 else "")
        parts = [f"{len(missing)} missing keys: {head(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected keys: {head(unexpected)}" if unexpected else "",
                 f"{len(bad_shape)} shape mismatches: {head(bad_shape)}" if bad_shape else ""]
        raise I3DWeightsError(f"{path}: not the I3D Kinetics-400 layout of i3d_pretrained_400.pt "
                              f"({len(expected)} tensors expected): " + "; ".join(p for p in parts if p))
    sd = dict(sd)
    for k, v in model.state_dict().items():  # the published file has no BN step counters
        if k.endswith("num_batches_tracked"):
            sd.setdefault(k, v)
    model.load_state_dict(sd, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------------------
# StyleGAN-V's TorchScript I3D (opt-in)

# SHA-256 of StyleGAN-V's published i3d_torchscript.pt. None: no value from an independent source was found
# here (the spec gives none, the file is not reachable offline), so the file is refused until someone who
# has verified it pins its hash here. The opt-in exists so a TorchScript file, which is a program, is never
# run because a path happened to point at one.
STYLEGAN_V_I3D_SHA256: str | None = None


class _StyleGANVI3D(nn.Module):
    """StyleGAN-V's TorchScript I3D as a feature network: (B, 3, T, H, W) float in [0, 255] -> (B, 400)
    logits, the network rescaling to [-1, 1] and resizing to 224x224 itself."""
    flavour = "stylegan_v"

    def __init__(self, script: torch.jit.ScriptModule):
        super().__init__()
        self.script = script
        self._anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # gives the module a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.script(x, rescale=True, resize=True, return_features=True)


def load_stylegan_v_i3d(path: str | Path, *, allow_torchscript: bool, pinned_sha256: str | None = None,
                        map_location="cpu") -> nn.Module:
    """StyleGAN-V's `i3d_torchscript.pt`, loaded only with eval.allow_i3d_torchscript true and only when the
    file's SHA-256 equals the pinned one (`pinned_sha256`, default STYLEGAN_V_I3D_SHA256); anything else
    is refused with I3DWeightsError naming the params, before torch.jit.load runs the file."""
    from videogpt.fileio import file_sha256
    path = Path(path)
    if not allow_torchscript:
        raise I3DWeightsError(f"{path}: eval.fvd_protocol stylegan_v runs StyleGAN-V's TorchScript I3D, a program "
                              "rather than plain weights; set eval.allow_i3d_torchscript: true to opt in (only the "
                              "file with the pinned SHA-256 is then accepted)")
    if not path.is_file():
        raise I3DWeightsError(f"{path}: eval.i3d_weights: StyleGAN-V's i3d_torchscript.pt not found")
    pinned = pinned_sha256 or STYLEGAN_V_I3D_SHA256
    digest = file_sha256(path)
    if pinned is None or digest != pinned:
        raise I3DWeightsError(f"{path}: eval.i3d_weights / eval.allow_i3d_torchscript: refused to load TorchScript "
                              f"with SHA-256 {digest}; only StyleGAN-V's i3d_torchscript.pt with the pinned SHA-256 "
                              f"{pinned} is accepted" + ("" if pinned else " (none is pinned yet: see "
                                                         "videogpt.metrics.i3d.STYLEGAN_V_I3D_SHA256)"))
    model = _StyleGANVI3D(torch.jit.load(str(path), map_location=map_location)).eval()
    model.requires_grad_(False)
    return model


def load_feature_network(path: str | Path, flavour: str, *, allow_torchscript: bool = False) -> nn.Module:
    """The I3D of a protocol's flavour: StyleGAN-V's pinned TorchScript for `stylegan_v`, else `load_i3d`."""
    if flavour == "stylegan_v":
        return load_stylegan_v_i3d(path, allow_torchscript=allow_torchscript)
    return load_i3d(path, flavour)


# --------------------------------------------------------------------------------------------
# Features


def _batches(videos, batch_size: int) -> Iterator[np.ndarray | torch.Tensor]:
    """Yield (n <= batch_size, T, H, W, 3) chunks from a 5-D array/tensor or an iterable of videos/batches."""
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim != 5:
            raise ValueError(f"expected (N, T, H, W, 3) videos, got shape {tuple(videos.shape)}")
        for i in range(0, videos.shape[0], batch_size):
            yield videos[i:i + batch_size]
        return
    buf: list = []
    n_buf = 0
    for item in videos:
        item = item if isinstance(item, torch.Tensor) else np.asarray(item)
        if item.ndim == 4:
            item = item[None]
        if item.ndim != 5:
            raise ValueError(f"expected videos (T, H, W, 3) or batches (n, T, H, W, 3), got {tuple(item.shape)}")
        buf.append(item)
        n_buf += item.shape[0]
        while n_buf >= batch_size:
            cat = torch.cat([torch.as_tensor(b) for b in buf]) if len(buf) > 1 else buf[0]
            yield cat[:batch_size]
            rest = cat[batch_size:]
            buf, n_buf = ([rest] if rest.shape[0] else []), rest.shape[0]
    if n_buf:
        yield torch.cat([torch.as_tensor(b) for b in buf]) if len(buf) > 1 else buf[0]


def i3d_features(model: nn.Module, videos: np.ndarray | torch.Tensor | Iterable, batch_size: int = 16,
                 device: str | torch.device | None = None, progress: bool = False,
                 precision: str = "32") -> np.ndarray:
    """I3D features (N, 400) float64 of uint8 videos (N, T, H, W, 3) or an iterable of videos / batches,
    preprocessed the way of the model's protocol flavour (`model.flavour`).

    The model is put in eval mode and moved to `device` (default: where its parameters are); the uint8
    batches go there as uint8 and are preprocessed on the device. precision (eval.precision): "32", or
    "bf16" autocast for the network (preprocessing and the returned features stay float32 / float64).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    total = None
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        total = videos.shape[0]
    elif hasattr(videos, "__len__"):
        total = len(videos)
    pbar = None
    if progress:
        from videogpt.progress import progress_bar
        pbar = progress_bar(total=total, unit="video", desc="I3D")
    out = []
    with torch.inference_mode():
        for batch in _batches(videos, batch_size):
            x = preprocess(to_device(torch.as_tensor(batch), device), model.flavour)
            with inference_autocast(device, precision):
                out.append(model(x).double().cpu().numpy())
            if pbar is not None:
                pbar.update(x.shape[0])
    if pbar is not None:
        pbar.close()
    if not out:
        raise ValueError("i3d_features: no videos given")
    feats = np.concatenate(out, axis=0)
    if not np.isfinite(feats).all():
        raise FloatingPointError("I3D produced non-finite features (corrupt weights or input?)")
    return feats


__all__ = [
    "I3D", "I3DWeightsError", "Unit3D", "InceptionModule", "MaxPool3dSame", "load_i3d", "i3d_features",
    "expected_state_keys", "N_PUBLISHED_TENSORS", "STYLEGAN_V_I3D_SHA256", "load_stylegan_v_i3d",
    "load_feature_network",
]
