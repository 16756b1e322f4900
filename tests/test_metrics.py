"""Fréchet distance maths, I3D structure/weights loading/preprocessing. No downloads; ~2 full I3D forwards."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from i3d_layout import published_layout_state_dict
from videogpt.metrics import frechet
from videogpt.metrics.frechet import FeatureSums, fvd, frechet_distance, gaussian_stats
from videogpt.metrics.i3d import I3D, I3DWeightsError, i3d_features, load_i3d
from videogpt.metrics.protocol import MIN_FRAMES, preprocess

# ------------------------------------------------------------------------------------------------
# Fréchet distance


def _direct_fd(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook formula written out independently: means, unbiased covariances, sqrtm of the product."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = (a - mu1).T @ (a - mu1) / (len(a) - 1)
    s2 = (b - mu2).T @ (b - mu2) / (len(b) - 1)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_matches_direct_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 12))
    b = rng.normal(size=(250, 12)) @ rng.normal(size=(12, 12)) * 0.5 + rng.normal(size=12)
    expected = _direct_fd(a, b)
    assert expected > 1.0
    assert fvd(a, b) == pytest.approx(expected, rel=1e-9)
    assert fvd(b, a) == pytest.approx(expected, rel=1e-9)


def test_frechet_self_is_zero_and_mean_shift_is_exact():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    assert fvd(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = rng.normal(size=16)
    # same samples shifted: identical covariance, so FD = ||shift||^2 exactly
    assert fvd(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    mu, sigma = gaussian_stats(a)
    for scale in (0.5, 2.0):
        assert frechet_distance(mu, sigma, mu + scale * shift, sigma) == pytest.approx(scale**2 * shift @ shift,
                                                                                     rel=1e-9)


def test_frechet_rank_deficient_is_finite_and_matches():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20, 50)), rng.normal(size=(20, 50)) + 0.3  # covariances of rank <= 19
    d = fvd(a, b)
    assert np.isfinite(d) and d > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on the singular product: the reason we do not use it
        assert d == pytest.approx(_direct_fd(a, b), rel=1e-6)
    assert fvd(a, a) == pytest.approx(0.0, abs=1e-8)


def test_gaussian_stats_does_not_mutate_and_is_unbiased():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 4)) + 5.0
    before = x.copy()
    mu, sigma = gaussian_stats(x)
    np.testing.assert_array_equal(x, before)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(before.T, ddof=1), rtol=1e-12)
    with pytest.raises(ValueError):
        gaussian_stats(x[:1])


def test_feature_sums_of_parts_give_the_statistics_of_the_whole():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(256, 400)) * 3 + 10, rng.normal(size=(256, 400)) * 3.3 + 10.1
    x = np.array([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])  # by hand: mu (3, 2), deviations (-2,0) (0,-2) (2,2)
    mu, sigma = (FeatureSums.of(x[:1]) + FeatureSums.of(x[1:])).gaussian(ddof=1)
    np.testing.assert_allclose(mu, [3.0, 2.0], rtol=1e-15)
    np.testing.assert_allclose(sigma, [[4.0, 2.0], [2.0, 4.0]], rtol=1e-14)  # sum of outer products / 2
    assert (FeatureSums.of(x[:0]) + FeatureSums.of(x)).n == 3
    for ddof in (0, 1):
        whole = gaussian_stats(a, ddof)
        parts = FeatureSums.of(a[:100]) + FeatureSums.of(a[100:101]) + FeatureSums.of(a[101:])
        np.testing.assert_allclose(parts.gaussian(ddof)[0], whole[0], rtol=1e-12)
        np.testing.assert_allclose(parts.gaussian(ddof)[1], whole[1], rtol=1e-9, atol=1e-9)
        ref = frechet_distance(*whole, *gaussian_stats(b, ddof))
        got = frechet_distance(*parts.gaussian(ddof), *(FeatureSums.of(b[:7]) + FeatureSums.of(b[7:])).gaussian(ddof))
        assert got == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        FeatureSums.of(x[:1]).gaussian()


def test_stats_roundtrip_and_protocol_key(tmp_path):
    rng = np.random.default_rng(4)
    mu, sigma = gaussian_stats(rng.normal(size=(8, 3)))
    proto = {"n_real": 8, "resize": "x", "weights_sha256": "ab"}
    assert frechet.protocol_key(proto) == frechet.protocol_key(dict(reversed(list(proto.items()))))
    assert frechet.protocol_key(proto) != frechet.protocol_key({**proto, "n_real": 9})
    path = tmp_path / "real_stats.npz"
    frechet.save_stats(path, mu, sigma, proto, n=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real_stats.npz"]  # no temp file left behind
    mu2, sigma2, proto2 = frechet.load_stats(path, proto)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    assert proto2 == proto and frechet.stats_n(path) == 8
    with pytest.raises(frechet.StatsMismatchError, match="n_real"):
        frechet.load_stats(path, {**proto, "n_real": 9})


# ------------------------------------------------------------------------------------------------
# I3D

def test_published_layout_matches_model_strictly():
    sd = published_layout_state_dict()
    assert len(sd) == 287
    model = I3D()
    assert sum(p.numel() for p in model.parameters()) == 12_697_264  # the published I3D's parameter count
    assert sum(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)) == 57
    model.load_state_dict(sd, strict=True)  # a plain OrderedDict, as published (no num_batches_tracked)


@pytest.fixture(scope="module")
def clip():
    return torch.randint(0, 256, (1, 16, 64, 64, 3), generator=torch.Generator().manual_seed(0),
                         dtype=torch.uint8).numpy()


@pytest.fixture(scope="module")
def fresh_features(clip):
    torch.manual_seed(0)
    return i3d_features(I3D(), clip, batch_size=1, device="cpu")


def test_i3d_forward_shape(fresh_features):
    assert fresh_features.shape == (1, 400)
    assert fresh_features.dtype == np.float64
    assert np.isfinite(fresh_features).all()


def test_load_i3d_strict_changes_output(tmp_path, clip, fresh_features):
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(published_layout_state_dict(seed=1), path)
    model = load_i3d(path)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    torch.testing.assert_close(model.Mixed_5c.b1b.bn.running_var, published_layout_state_dict(seed=1)[
        "Mixed_5c.b1b.bn.running_var"])
    loaded = i3d_features(model, iter([clip[0]]), batch_size=2, device="cpu")  # iterable of single videos
    assert loaded.shape == (1, 400) and np.isfinite(loaded).all()
    assert (loaded < 0).any()  # raw logits: no ReLU on the head
    assert np.abs(loaded - fresh_features).max() > 1e-3


def test_load_i3d_rejects_wrong_layout(tmp_path):
    sd = published_layout_state_dict()
    sd.pop("Mixed_4c.b2b.bn.running_var")
    sd["Mixed_4c.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(I3DWeightsError, match=r"missing keys: Mixed_4c\.b2b\.bn\.running_var") as e:
        load_i3d(path)
    assert "unexpected keys: Mixed_4c.extra.weight" in str(e.value) and "bad.pt" in str(e.value)
    sd = published_layout_state_dict()
    sd["logits.conv3d.weight"] = torch.zeros(600, 1024, 1, 1, 1)
    torch.save(sd, path)
    with pytest.raises(I3DWeightsError, match="shape mismatch"):
        load_i3d(path)
    with pytest.raises(I3DWeightsError, match="not found"):
        load_i3d(tmp_path / "absent.pt")


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling this creates the marker file


def test_load_i3d_refuses_code_running_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": _Evil(marker)}, path)
    with pytest.raises(I3DWeightsError, match="refused") as e:
        load_i3d(path)
    assert str(path) in str(e.value)
    assert not marker.exists()
    # the payload is real: an unrestricted unpickler does run it
    other = tmp_path / "pwned2"
    with open(tmp_path / "p.pkl", "wb") as fh:
        pickle.dump(_Evil(other), fh)
    with open(tmp_path / "p.pkl", "rb") as fh:
        pickle.load(fh).close()
    assert other.exists()


def test_preprocess_range_shape_and_frame_check():
    v = np.zeros((2, MIN_FRAMES, 8, 8, 3), np.uint8)
    v[1] = 255
    v[0, :, :, 4:] = 255
    x = preprocess(v, "videogpt")
    assert x.shape == (2, 3, MIN_FRAMES, 224, 224) and x.dtype == torch.float32
    assert torch.all(x[0, :, :, :, 0] == -1.0)
    torch.testing.assert_close(x[1], torch.ones_like(x[1]), atol=1e-6, rtol=0)  # bilinear round-off only
    assert x.min() == -1.0 and x.max() <= 1.0 + 1e-6  # no clamp, as the port: bilinear round-off only
    # left half black, right half white: the edge follows the videogpt flavour's half-pixel bilinear resize
    # (source x = (j + 0.5) * 8/224 - 0.5; the tf flavour's TF1 legacy resize samples j * 8/224 instead)
    src = np.clip((np.arange(224) + 0.5) * 8 / 224 - 0.5, 0, 7)
    i0 = np.floor(src).astype(int)
    row = np.where(np.arange(8) >= 4, 255.0, 0.0)
    want = row[i0] * (1 - (src - i0)) + row[np.minimum(i0 + 1, 7)] * (src - i0)
    torch.testing.assert_close(x[0, 0, 0, 0].double(), torch.from_numpy(want / 127.5 - 1), atol=1e-5, rtol=0)
    exact = preprocess(np.stack([np.zeros((MIN_FRAMES, 224, 224, 3), np.uint8),
                                 np.full((MIN_FRAMES, 224, 224, 3), 255, np.uint8)]))
    assert torch.all(exact[0] == -1.0) and torch.all(exact[1] == 1.0)  # no resize at 224: exact mapping
    with pytest.raises(ValueError, match="at least 9 frames"):
        preprocess(np.zeros((1, 8, 64, 64, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        preprocess(np.zeros((1, 16, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=">= 9 frames"):
        I3D()(torch.zeros(1, 3, 8, 224, 224))


def test_same_padding_matches_tf_rule_and_pools_ignore_padding():
    from videogpt.metrics.i3d import MaxPool3dSame, _same_pad

    for size in range(1, 20):
        for k in (1, 2, 3, 7):
            for s in (1, 2):
                total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)  # TF's SAME padding rule
                w0, w1, *_ = _same_pad((size, size, size), (k, k, k), (s, s, s))
                assert (w0, w1) == (total // 2, total - total // 2), (size, k, s)
    x = -torch.ones(1, 1, 3, 5, 5)
    y = MaxPool3dSame(3, 2)(x)
    assert y.shape == (1, 1, 2, 3, 3) and torch.all(y == -1.0)  # zero padding would leak 0s at the border


def test_logits_are_averaged_over_time():
    model = I3D().eval()
    model.load_state_dict(published_layout_state_dict(seed=2))  # a fresh init barely varies over time
    seen = {}
    model.logits.register_forward_hook(lambda m, i, o: seen.setdefault("logits", o))
    x = torch.rand(1, 3, 24, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x[:, :, 12:] = x[:, :, 12:].sign()  # make the two halves of the clip differ
    with torch.inference_mode():
        out = model(x)  # 24 frames -> 2 logit time steps
    per_t = seen["logits"]
    assert per_t.shape == (1, 400, 2, 1, 1)
    assert (per_t[:, :, 0] - per_t[:, :, 1]).abs().max() > 0.1
    torch.testing.assert_close(out, per_t.flatten(2).mean(2))


def test_batching_of_iterables_keeps_order():
    from videogpt.metrics.i3d import _batches

    vids = [np.full((2, 1, 1, 3), i, np.uint8) for i in range(6)]
    items = [vids[0], np.stack(vids[1:4]), vids[4], vids[5]]  # single videos and a batch, mixed
    got = list(_batches(iter(items), 4))
    assert [len(b) for b in got] == [4, 2]
    assert [int(v[0, 0, 0, 0]) for b in got for v in b] == list(range(6))
    assert [len(b) for b in _batches(np.stack(vids), 4)] == [4, 2]
