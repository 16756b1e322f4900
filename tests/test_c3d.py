"""TGANv2's UCF-101 C3D and the Inception Score (paper Table 2).

The network is checked against an independent transcription of the spec (§3.5) written below with explicit
operations (its own bilinear weights, its own cover_all pooling), on random weights saved in the published
.npz layout; the score against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videogpt.metrics import c3d


def _aligned_bilinear(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of bilinear resizing with aligned corners: source = dst * (n_in - 1) / (n_out - 1)."""
    w = np.zeros((n_out, n_in))
    for d in range(n_out):
        s = d * (n_in - 1) / (n_out - 1)
        lo = min(int(math.floor(s)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        w[d, lo] += 1 - (s - lo)
        w[d, hi] += s - lo
    return w


def _pool_cover_all(x: torch.Tensor, k: tuple[int, int, int]) -> torch.Tensor:
    """Max over non-overlapping k-blocks, a partial block at the end kept (Chainer's cover_all)."""
    pads = []
    for size, kk in zip(reversed(x.shape[2:]), reversed(k)):
        pads += [0, (-size) % kk]
    x = F.pad(x, pads, value=float("-inf"))
    n, c, t, h, w = x.shape
    kt, kh, kw = k
    return x.reshape(n, c, t // kt, kt, h // kh, kh, w // kw, kw).amax(dim=(3, 5, 7))


def _transcription(arrays: dict, mean: np.ndarray, video_uint8: np.ndarray) -> torch.Tensor:
    """The spec's C3D, step by step, for one uint8 video (16, H, W, 3) -> (101,) logits."""
    x = torch.from_numpy(video_uint8.astype(np.float32) * (2.0 / 255.0) - 1.0)      # [-1, 1], (T, H, W, RGB)
    x = x[..., [2, 1, 0]] * 128.0                                                     # BGR x 128
    t, h, w, _ = x.shape
    wh = torch.from_numpy(_aligned_bilinear(h, 112)).float()
    ww = torch.from_numpy(_aligned_bilinear(w, 112)).float()
    x = torch.einsum("oh,thwc,pw->ctop", wh, x, ww)                                  # (3, 16, 112, 112)
    x = x + (128.0 - torch.from_numpy(mean[:, :, 8:120, 8:120]).float())
    x = x[None]
    pools = {"conv1a": (1, 2, 2), "conv2a": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2),
             "conv5b": (2, 2, 2)}
    for name in ("conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"):
        x = torch.relu(F.conv3d(x, torch.from_numpy(arrays[f"{name}/W"]), torch.from_numpy(arrays[f"{name}/b"]),
                                padding=1))
        if name in pools:
            x = _pool_cover_all(x, pools[name])
    assert x.shape == (1, 512, 1, 4, 4)
    x = x.reshape(1, -1)
    for name in ("fc6", "fc7", "fc8"):
        x = x @ torch.from_numpy(arrays[f"{name}/W"]).T + torch.from_numpy(arrays[f"{name}/b"])
        if name != "fc8":
            x = torch.relu(x)
    return x[0]


@pytest.fixture(scope="module")
def published_files(tmp_path_factory):
    """Random weights (He-scaled, so activations survive 11 layers) and mean clip, in the published layout."""
    rng = np.random.default_rng(0)
    arrays = {}
    for key, shape in c3d.published_shapes().items():
        fan_in = int(np.prod(shape[1:])) if key.endswith("/W") else 1
        scale = math.sqrt(2.0 / fan_in) if key.endswith("/W") else 0.01
        arrays[key] = (rng.standard_normal(shape) * scale).astype(np.float32)
    mean = rng.uniform(80, 120, (3, 16, 128, 171)).astype(np.float32)   # the released file's shape
    folder = tmp_path_factory.mktemp("c3d")
    np.savez(folder / c3d.WEIGHTS_FILE, **arrays)
    np.savez(folder / c3d.MEAN_FILE, mean=mean)
    return folder / c3d.WEIGHTS_FILE, arrays, mean


def test_logits_equal_an_independent_transcription(published_files):
    path, arrays, mean = published_files
    model = c3d.load_c3d(path)
    video = np.random.default_rng(1).integers(0, 256, (16, 64, 80, 3), dtype=np.uint8)   # not square, not 112
    x = torch.from_numpy(video).permute(3, 0, 1, 2)[None].float() * (2.0 / 255.0) - 1.0
    with torch.inference_mode():
        got = model(x)[0]
    want = _transcription(arrays, mean, video)
    assert got.shape == (101,) and want.abs().max() > 1e-3                           # not vanished
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    probs = c3d.class_probabilities(model, video[None])
    np.testing.assert_allclose(probs[0], torch.softmax(want.double(), 0).numpy(), rtol=1e-3, atol=1e-6)


def test_files_outside_the_published_layout_are_refused(published_files, tmp_path):
    path, arrays, _ = published_files
    with pytest.raises(c3d.C3DWeightsError, match="not found"):
        c3d.load_c3d(tmp_path / c3d.WEIGHTS_FILE)
    bad = dict(arrays)
    bad["fc8/W"] = bad["fc8/W"][:100]
    np.savez(tmp_path / c3d.WEIGHTS_FILE, **bad)
    np.savez(tmp_path / c3d.MEAN_FILE, mean=np.zeros((3, 16, 128, 128), np.float32))
    with pytest.raises(c3d.C3DWeightsError, match=r"fc8/W: \(100, 4096\) vs \(101, 4096\)"):
        c3d.load_c3d(tmp_path / c3d.WEIGHTS_FILE)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "obj.npy").rename(tmp_path / c3d.WEIGHTS_FILE)
    with pytest.raises(c3d.C3DWeightsError, match="not a readable .npz"):  # never unpickled
        c3d.load_c3d(tmp_path / c3d.WEIGHTS_FILE)
    np.savez(tmp_path / c3d.WEIGHTS_FILE, **arrays)
    np.savez(tmp_path / c3d.MEAN_FILE, mean=np.zeros((3, 16, 64, 64), np.float32))
    with pytest.raises(c3d.C3DWeightsError, match=r"mean2.npz: expected 'mean' of shape \(3, 16, 128, 171\)"):
        c3d.load_c3d(tmp_path / c3d.WEIGHTS_FILE)
    np.savez(tmp_path / c3d.MEAN_FILE, mean=np.zeros((1, 3, 16, 128, 171), np.float32))  # a leading axis of 1
    assert c3d.load_c3d(tmp_path / c3d.WEIGHTS_FILE).mean.shape == (3, 16, 112, 112)


def test_inception_score_by_hand():
    assert c3d.inception_score([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(2.0)    # sure and diverse: K
    assert c3d.inception_score([[0.5, 0.5], [0.5, 0.5]]) == pytest.approx(1.0)    # unsure: 1
    assert c3d.inception_score([[1.0, 0.0], [1.0, 0.0]]) == pytest.approx(1.0)    # one class only: 1
    p = [[0.9, 0.1], [0.2, 0.8]]   # p(y) = (0.55, 0.45)
    kl1 = 0.9 * math.log(0.9 / 0.55) + 0.1 * math.log(0.1 / 0.45)
    kl2 = 0.2 * math.log(0.2 / 0.55) + 0.8 * math.log(0.8 / 0.45)
    assert c3d.inception_score(p) == pytest.approx(math.exp((kl1 + kl2) / 2), rel=1e-12)
    loops = c3d.inception_score_loops([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [1.0, 0.0]], per_loop=2)
    assert loops == pytest.approx([2.0, 1.0])                                          # the short tail dropped


def test_evaluate_reports_the_inception_score_of_the_samples(published_files):
    """evaluate's `is` entry: the score of the decoded samples per loop, its protocol; null with the reason
    without weights."""
    from videogpt.config import EvalParams
    from videogpt.evaluation import inception_score_entry
    from videogpt.vqvae import VQVAE, VQVAEConfig
    path, *_ = published_files
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig(n_hiddens=8, res_hiddens=4, n_res_layers=1, downsample=(4, 4, 4), n_codes=8,
                              embedding_dim=4, n_heads=1, input_shape=(16, 16, 16))).eval()
    tokens = np.random.default_rng(0).integers(0, 8, (4, 4, 4, 4))
    none = inception_score_entry(EvalParams(), vqvae, tokens, "cpu")
    assert none["mean"] is None and none["reason"].startswith("no C3D weights") and none["comparable_with"] == []
    entry = inception_score_entry(EvalParams(c3d_weights=str(path), batch_size=2), vqvae, tokens, "cpu")
    with torch.inference_mode():
        videos = np.concatenate([c3d_videos(vqvae, tokens)])
    probs = c3d.class_probabilities(c3d.load_c3d(path), videos)
    assert entry["trials"] == pytest.approx([c3d.inception_score(probs)]) and entry["mean"] >= 1.0
    assert entry["protocol"]["samples_per_loop"] == 4 and entry["comparable_with"] == []
    assert "TGANv2's protocol uses 10 loops of 2048" in entry["not_comparable_because"]


def c3d_videos(vqvae, tokens) -> np.ndarray:
    """The samples as the entry feeds them: decoded, rounded to uint8."""
    from videogpt.video import to_uint8
    return to_uint8(vqvae.decode(torch.as_tensor(tokens, dtype=torch.long))).numpy()
