"""FVD protocol flavours against their published definitions, trial statistics and the real-subset rule.

The `videogpt` flavour is checked against a reference written here from the definition of the VideoGPT/TATS
PyTorch port (as published): its preprocessing in NumPy float64 and the network as plain functional ops over
the published state dict with BatchNorm written out as (x - mean) / sqrt(var + eps) * w + b at eps 1e-5,
zero-padded SAME max-pools (the port's choice) and the port's padding rule. None of the project's I3D code
is used by the reference. About 15 I3D forwards of 9-frame clips in all.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from i3d_layout import MIXED, published_layout_state_dict
from videogpt.metrics.frechet import fvd
from videogpt.metrics.i3d import I3D, i3d_features, load_i3d
from videogpt.metrics.protocol import (FLAVOURS, generated_to_uint8, preprocess, protocol, real_to_uint8)
from videogpt.metrics.trials import real_subset, real_subsets, trial_summary

# ------------------------------------------------------------------------------------------------
# Reference of the port's definition (float64, independent of videogpt.metrics)


def _bilinear_half_pixel(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """torch bilinear, align_corners=False, no antialias: source = (dst + 0.5) * in/out - 0.5, clamped at 0."""
    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0
    r0, r1, fr = axis(img.shape[0], out_h)
    c0, c1, fc = axis(img.shape[1], out_w)
    rows = img[r0] * (1 - fr)[:, None, None] + img[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def _port_preprocess(video: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float64 (1, 3, T, 224, 224): /255, shorter side -> 224 (longer side ceil),
    centre crop 224 at ((size - 224) // 2), -0.5, *2."""
    t, h, w, _ = video.shape
    scale = 224 / min(h, w)
    oh, ow = (224, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), 224)
    frames = []
    for f in video.astype(np.float64) / 255.0:
        r = _bilinear_half_pixel(f, oh, ow)
        top, left = (oh - 224) // 2, (ow - 224) // 2
        frames.append((r[top:top + 224, left:left + 224] - 0.5) * 2.0)
    return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)[None]  # (1, 3, T, 224, 224)


def _same(x: torch.Tensor, k, s, value=0.0) -> torch.Tensor:
    """TF SAME padding in the port's formulation: total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0);
    front = total // 2, back = the rest."""
    pads = []
    for size, kk, ss in zip(x.shape[2:], k, s):
        total = max(kk - ss, 0) if size % ss == 0 else max(kk - size % ss, 0)
        pads.append((total // 2, total - total // 2))
    (t0, t1), (h0, h1), (w0, w1) = pads
    return F.pad(x, [w0, w1, h0, h1, t0, t1], value=value)


def _port_logits(x: torch.Tensor, sd: dict, eps: float) -> torch.Tensor:
    """The port's I3D from its definition: (1, 3, T, 224, 224) float64 -> (1, 400) logits averaged over time."""
    p = {k: v.double() for k, v in sd.items()}

    def unit(x, name, k, s=1):
        k3, s3 = (k,) * 3, (s,) * 3
        y = F.conv3d(_same(x, k3, s3), p[f"{name}.conv3d.weight"], stride=s3)
        c = (1, -1, 1, 1, 1)
        bn = (y - p[f"{name}.bn.running_mean"].view(c)) / torch.sqrt(p[f"{name}.bn.running_var"].view(c) + eps)
        return torch.relu(bn * p[f"{name}.bn.weight"].view(c) + p[f"{name}.bn.bias"].view(c))

    def pool(x, k, s):
        return F.max_pool3d(_same(x, k, s), k, s)  # the port pads its max-pools with zeros

    def mixed(x, name):
        return torch.cat([unit(x, f"{name}.b0", 1), unit(unit(x, f"{name}.b1a", 1), f"{name}.b1b", 3),
                          unit(unit(x, f"{name}.b2a", 1), f"{name}.b2b", 3),
                          unit(pool(x, (3, 3, 3), (1, 1, 1)), f"{name}.b3b", 1)], dim=1)

    x = unit(x, "Conv3d_1a_7x7", 7, 2)
    x = pool(x, (1, 3, 3), (1, 2, 2))
    x = unit(unit(x, "Conv3d_2b_1x1", 1), "Conv3d_2c_3x3", 3)
    x = pool(x, (1, 3, 3), (1, 2, 2))
    names = [m[0] for m in MIXED]
    for name in names[:2]:
        x = mixed(x, name)
    x = pool(x, (3, 3, 3), (2, 2, 2))
    for name in names[2:7]:
        x = mixed(x, name)
    x = pool(x, (2, 2, 2), (2, 2, 2))
    for name in names[7:]:
        x = mixed(x, name)
    x = F.avg_pool3d(x, (2, 7, 7), stride=1)
    x = F.conv3d(x, p["logits.conv3d.weight"], p["logits.conv3d.bias"])  # (1, 400, T', 1, 1)
    return x.squeeze(4).squeeze(3).mean(2)


@pytest.fixture(scope="module")
def small_var_weights(tmp_path_factory):
    """Published-layout weights with running variances ~1e-3, where eps 1e-5 and 1e-3 differ clearly."""
    sd = published_layout_state_dict(seed=3, var_scale=1e-3)
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(sd, path)
    return sd, path


def test_videogpt_flavour_logits_equal_the_port_definition(small_var_weights):
    sd, path = small_var_weights
    # a non-square clip: 48x64 -> 224x299 (ceil of 298.7), crop columns 37..260
    video = np.random.default_rng(0).integers(0, 256, (9, 48, 64, 3), dtype=np.uint8)
    want = _port_logits(_port_preprocess(video), sd, eps=1e-5).numpy()

    model = load_i3d(path, "videogpt")
    got = i3d_features(model, video[None], batch_size=1)
    scale = np.abs(want).max()
    assert scale > 0.1
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)  # float32 vs float64: ~3e-7 * scale

    # the test can fail: the TF BatchNorm eps on the very same input is far off
    tf_net = load_i3d(path, "tf")
    with torch.inference_mode():
        other = tf_net(preprocess(video[None], "videogpt")).double().numpy()
    assert np.abs(other - want).max() > 0.1 * scale


def _tf1_legacy_resize(img: np.ndarray, out: int) -> np.ndarray:
    """TF1 resize_bilinear (align_corners=False, half_pixel_centers=False), pixel by pixel: output pixel (i, j)
    reads source (i * in_h / out, j * in_w / out), interpolating its floor and the next pixel (clamped)."""
    h, w = img.shape[:2]
    res = np.zeros((out, out, img.shape[2]))
    for i in range(out):
        y = i * h / out
        y0 = int(math.floor(y))
        y1, dy = min(y0 + 1, h - 1), y - y0
        for j in range(out):
            x = j * w / out
            x0 = int(math.floor(x))
            x1, dx = min(x0 + 1, w - 1), x - x0
            top = img[y0, x0] * (1 - dx) + img[y0, x1] * dx
            bottom = img[y1, x0] * (1 - dx) + img[y1, x1] * dx
            res[i, j] = top * (1 - dy) + bottom * dy
    return res


@pytest.mark.parametrize("size", [(64, 64), (120, 160)])  # x3.5 and x1.87 / x1.4: non-integer ratios
def test_tf_flavour_logits_equal_the_tf_definition_at_eps_1e3(small_var_weights, size):
    """The `tf` flavour against the TF definition written out here: TF1 legacy resize of every frame to
    224x224 (stretching a non-square frame), 2x/255 - 1, and the network with BatchNorm eps 1e-3."""
    sd, path = small_var_weights
    video = np.random.default_rng(1).integers(0, 256, (9, *size, 3), dtype=np.uint8)
    frames = np.stack([_tf1_legacy_resize(f, 224) for f in video.astype(np.float64)]) * 2 / 255 - 1
    want = _port_logits(torch.from_numpy(frames).permute(3, 0, 1, 2)[None], sd, eps=1e-3).numpy()
    got = i3d_features(load_i3d(path, "tf"), video[None], batch_size=1)
    scale = np.abs(want).max()
    assert scale > 0.1
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
    # the half-pixel kernel (torch's) on the same input is measurably off: the test sees the resize
    shifted = np.stack([_bilinear_half_pixel(f, 224, 224) for f in video.astype(np.float64)]) * 2 / 255 - 1
    other = _port_logits(torch.from_numpy(shifted).permute(3, 0, 1, 2)[None], sd, eps=1e-3).numpy()
    assert np.abs(other - want).max() > 5e-5 * scale  # 5x the tolerance above


def test_preprocess_flavours_against_hand_values():
    # tf: TF1 legacy bilinear, source = dst * in/out. A 2-pixel row [0, 255] stretched to 224 columns:
    # source = j/112, value = 255 * min(j/112, 1).
    row = np.zeros((9, 2, 2, 3), np.uint8)
    row[:, :, 1] = 255
    x = preprocess(row[None], "tf")[0, 0, 0, 0].double().numpy()
    want = 2 * np.minimum(np.arange(224) / 112, 1.0) - 1
    np.testing.assert_allclose(x, want, atol=1e-5)
    # videogpt on the same input: half-pixel centres, source = (j + 0.5)/112 - 0.5, clamped to [0, 1]
    y = preprocess(row[None], "videogpt")[0, 0, 0, 0].double().numpy()
    np.testing.assert_allclose(y, 2 * np.clip((np.arange(224) + 0.5) / 112 - 0.5, 0, 1) - 1, atol=1e-5)
    # videogpt on a non-square frame crops the centre instead of stretching: a 2x4 frame whose outer
    # columns are white and inner ones black. Short side 2 -> 224, long 4 -> 448, crop columns 112..335,
    # whose sources (j + 0.5)/112 - 0.5 run from 0.5 to 2.5: the crop never reaches a pure-white column.
    frame = np.zeros((9, 2, 4, 3), np.uint8)
    frame[:, :, [0, 3]] = 255
    c = preprocess(frame[None], "videogpt")[0, 0, 0, 0].double().numpy()
    src = (np.arange(112, 336) + 0.5) / 112 - 0.5
    cols = np.array([255.0, 0, 0, 255.0])
    i0 = np.floor(src).astype(int)
    ref = cols[i0] * (1 - (src - i0)) + cols[np.minimum(i0 + 1, 3)] * (src - i0)
    np.testing.assert_allclose(c, ref / 127.5 - 1, atol=1e-5)
    assert c.max() < 1.0 - 1e-3  # stretching (tf) would keep the white border columns
    assert preprocess(frame[None], "tf")[0, 0, 0, 0].max() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown I3D protocol 'pt'"):
        preprocess(row[None], "pt")


def test_uint8_conversions_round_vs_truncate():
    x = torch.tensor([-0.6, -0.5, 0.2 / 255 - 0.5, 0.7 / 255 - 0.5, 0.0, 0.5, 0.7])
    x = x.view(1, 7, 1, 1).expand(3, 7, 1, 1)  # (3, T, H, W): seven frames of one gray pixel
    # clamp(x + 0.5, 0, 1) * 255 = [0, 0, 0.2, 0.7, 127.5, 255, 255]
    assert generated_to_uint8(x, "tf").shape == (7, 1, 1, 3)  # channels last
    assert generated_to_uint8(x, "tf")[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 128, 255, 255]
    assert generated_to_uint8(x, "videogpt")[:, 0, 0, 2].tolist() == [0, 0, 0, 0, 127, 255, 255]
    clip = np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1), 3, axis=-1)  # (T, H, W, 3)
    assert real_to_uint8(clip, "tf") is clip
    back = real_to_uint8(clip, "videogpt")
    assert back.shape == clip.shape and np.array_equal(back[..., 0], back[..., 2])
    v, back = clip[..., 0].ravel(), back[..., 0].ravel()
    assert back.dtype == np.uint8 and back[0] == 0 and back[1] == 0 and back[255] == 255  # 1/255 round trip -> 0
    assert np.all((back == v) | (back == v - 1))  # truncation only ever lowers, by one
    assert 0 < int((back != v).sum()) < 128


def test_protocols_record_what_differs():
    tf, vg = protocol("tf"), protocol("videogpt")
    assert set(FLAVOURS) == {"tf", "videogpt", "stylegan_v"}
    assert (tf["bn_eps"], vg["bn_eps"]) == (1e-3, 1e-5)
    assert tf["i3d_protocol"] == "tf" and vg["i3d_protocol"] == "videogpt"
    assert {k for k in tf if tf[k] != vg[k]} >= {"i3d_protocol", "bn_eps", "resize", "generated_uint8",
                                                 "real_uint8"}
    assert [m.eps for m in I3D(flavour="videogpt").modules() if isinstance(m, torch.nn.BatchNorm3d)] == [1e-5] * 57


# ------------------------------------------------------------------------------------------------
# Trials and real subsets


def test_trial_summary_is_mean_and_population_std():
    s = trial_summary([1.0, 2.0, 4.0])
    # mean 7/3; population variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 3 = 42/27 = 14/9
    assert s["trials"] == [1.0, 2.0, 4.0] and s["n_trials"] == 3
    assert s["mean"] == pytest.approx(7 / 3, rel=1e-12)
    assert s["std"] == pytest.approx(math.sqrt(14) / 3, rel=1e-12)
    assert trial_summary([5.0]) == {"trials": [5.0], "mean": 5.0, "std": 0.0, "n_trials": 1}
    assert trial_summary([None, None])["mean"] is None


def test_real_subsets_are_seeded_random_draws_over_the_whole_split():
    labels = np.repeat([0, 1, 2, 3], 25)  # a class-sorted store: 4 classes in path order
    first_n = labels[:30]
    assert set(first_n) == {0, 1}  # the old rule ("first n_real clips") misses half the classes
    for seed in range(40):
        for idx in real_subsets(len(labels), 30, 2, seed):
            assert set(labels[idx]) == {0, 1, 2, 3}
            assert len(set(idx.tolist())) == 30 and list(idx) == sorted(idx)
    a, b = real_subsets(100, 30, 3, seed=7), real_subsets(100, 30, 3, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # equal seeds, equal subsets
    assert not np.array_equal(a[0], a[1])  # each trial its own subset
    assert not np.array_equal(a[0], real_subset(100, 30, seed=8))
    assert np.array_equal(real_subsets(100, 30, 1, seed=7)[0], a[0])  # adding trials keeps trial 0
    with pytest.raises(ValueError, match="n_real=101"):
        real_subset(100, 101, seed=0)


# ------------------------------------------------------------------------------------------------
# FVD on real clips with a random I3D in the published layout


@pytest.fixture(scope="module")
def moving_clips():
    """Six 9-frame 32x32 clips of a bright square moving over a textured background."""
    rng = np.random.default_rng(1)
    clips = np.empty((6, 9, 32, 32, 3), np.uint8)
    for i in range(6):
        bg = rng.integers(0, 120, (32, 32, 3))
        y, x, dy, dx = *rng.integers(0, 20, 2), *rng.integers(-2, 3, 2)
        for t in range(9):
            f = bg.copy()
            f[(y + dy * t) % 24:(y + dy * t) % 24 + 8, (x + dx * t) % 24:(x + dx * t) % 24 + 8] = 230
            clips[i, t] = f
    return clips


@pytest.fixture(scope="module")
def i3d_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d_rand") / "i3d_pretrained_400.pt"
    torch.save(published_layout_state_dict(seed=5), path)
    return load_i3d(path, "videogpt")


@pytest.fixture(scope="module")
def subset_features(moving_clips, i3d_model):
    idx = real_subset(len(moving_clips), 3, seed=0)
    return idx, i3d_features(i3d_model, moving_clips[idx], batch_size=3)


def test_fd_of_a_subset_with_itself_is_zero(moving_clips, i3d_model, subset_features):
    idx, a = subset_features
    b = i3d_features(i3d_model, iter(list(moving_clips[idx])), batch_size=2)  # other batching, same clips
    assert fvd(a, b) == pytest.approx(0.0, abs=1e-6)


def test_fvd_grows_with_noise(moving_clips, i3d_model, subset_features):
    idx, feats = subset_features
    real = moving_clips[idx]
    rng = np.random.default_rng(2)
    values = []
    for sigma in (8, 32, 96):
        noisy = np.clip(real + rng.normal(0, sigma, real.shape), 0, 255).astype(np.uint8)
        values.append(fvd(i3d_features(i3d_model, noisy, batch_size=3), feats))
    assert 0 < values[0] < values[1] < values[2], values
