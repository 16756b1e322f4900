"""The named FVD protocols (eval.fvd_protocol): counts, real-subset and window rules, covariance estimator,
square root and what each number is comparable with; StyleGAN-V's TorchScript only by opt-in and pinned hash.

The StyleGAN-V reference here is written from its published formula (population covariance, ÷N; the real
part of sqrtm(S_gen S_real)), independent of videogpt.metrics.frechet. Clips come from the default data's
generator (moving digits).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import scipy.linalg
import torch

from videogpt.config import EvalParams, ParamsError, parse
from videogpt.data.clip_store import build_clip_store, clips_array
from videogpt.evaluation import compute_real_stats, draw_real_sets, eval_protocol, real_protocol
from videogpt.metrics.frechet import frechet_distance, gaussian_stats
from videogpt.metrics.i3d import I3DWeightsError, load_feature_network, load_stylegan_v_i3d
from videogpt.metrics.protocol import PROTOCOLS, fvd_protocol
from videogpt.metrics.trials import real_subsets, window_offsets


def _sgv_fd(feats_gen: np.ndarray, feats_real: np.ndarray) -> float:
    """StyleGAN-V's FVD from its published formula: population statistics (÷N), then
    m = ||mu_g - mu_r||^2, s = Re sqrtm(S_g S_r), FD = m + Tr(S_g + S_r - 2 s)."""
    def stats(f):
        mu = f.sum(0) / len(f)
        c = f - mu
        return mu, c.T @ c / len(f)
    mu_g, s_g = stats(feats_gen.astype(np.float64))
    mu_r, s_r = stats(feats_real.astype(np.float64))
    s = np.real(scipy.linalg.sqrtm(s_g @ s_r))
    return float(np.sum((mu_g - mu_r) ** 2) + np.trace(s_g + s_r - 2 * s))


def test_covariance_conventions_on_a_hand_computed_case():
    x = np.array([[0.0], [2.0], [4.0]])  # mean 2, squared deviations 4 + 0 + 4 = 8
    assert gaussian_stats(x, ddof=1)[1][0, 0] == pytest.approx(8 / 2)   # videogpt, tf_hub: ÷N−1
    assert gaussian_stats(x, ddof=0)[1][0, 0] == pytest.approx(8 / 3)   # stylegan_v: ÷N
    assert (PROTOCOLS["videogpt"].covariance_ddof, PROTOCOLS["tf_hub"].covariance_ddof,
            PROTOCOLS["stylegan_v"].covariance_ddof) == (1, 1, 0)
    # 1-D FD by hand: N(0, 4) vs N(3, 1) -> 9 + 4 + 1 - 2 * sqrt(4 * 1) = 10, with either square root
    for sqrt in ("eigh", "sqrtm"):
        assert frechet_distance([0.0], [[4.0]], [3.0], [[1.0]], sqrt=sqrt) == pytest.approx(10.0)


def test_stylegan_v_distance_equals_its_formula_and_differs_from_videogpt_by_the_trace_factor():
    rng = np.random.default_rng(0)
    n, d = 64, 8  # full-rank covariances: sqrtm is well defined
    a, b = rng.normal(size=(n, d)), rng.normal(0.3, 1.2, size=(n, d))
    sgv = PROTOCOLS["stylegan_v"]
    ours = frechet_distance(*gaussian_stats(a, sgv.covariance_ddof), *gaussian_stats(b, sgv.covariance_ddof),
                            sqrt=sgv.sqrt)
    assert ours == pytest.approx(_sgv_fd(a, b), rel=1e-6)
    vg = PROTOCOLS["videogpt"]
    vgd = frechet_distance(*gaussian_stats(a, vg.covariance_ddof), *gaussian_stats(b, vg.covariance_ddof),
                           sqrt=vg.sqrt)
    # the mean term is shared; every covariance (and so the whole trace term) scales by (N-1)/N
    m = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
    assert ours - m == pytest.approx((vgd - m) * (n - 1) / n, rel=1e-9)
    assert abs(ours - vgd) > 1e-3 * vgd  # the two conventions are distinguishable at this N


def test_anchors_and_comparability():
    vg, sgv = PROTOCOLS["videogpt"], PROTOCOLS["stylegan_v"]
    assert (vg.n_real, vg.n_generated, vg.real_subset, vg.window, vg.i3d) == (256, 256, "fixed", "random", "videogpt")
    assert (sgv.n_real, sgv.n_generated, sgv.real_subset, sgv.window, sgv.sqrt) == (2048, 2048, "first_n", "random",
                                                                                      "sqrtm")
    assert fvd_protocol("videogpt", None).record()["comparable_with"] == ["VideoGPT (Yan et al. 2021)"]
    assert fvd_protocol("stylegan_v", None).record()["comparable_with"] == ["StyleGAN-V (Skorokhodov et al. 2022)"]
    small = fvd_protocol("videogpt", 64).record()
    assert small["comparable_with"] == [] and small["n_generated"] == 64
    assert small["not_comparable_because"][0].startswith("n_real=64 (the anchor uses 256")
    assert fvd_protocol("videogpt", None, 128).record()["comparable_with"] == []  # fewer generated than the anchor
    assert fvd_protocol("tf_hub", None).record()["comparable_with"] == []  # no counts in the spec: no claim
    rec = fvd_protocol("videogpt", None).record(["the stored clips have 8 frames"])
    assert rec["comparable_with"] == [] and rec["not_comparable_because"] == ["the stored clips have 8 frames"]
    with pytest.raises(ParamsError, match="eval.fvd_protocol"):
        parse({"eval": {"fvd_protocol": "pt"}})
    with pytest.raises(ParamsError, match="eval.n_generated"):
        parse({"eval": {"n_generated": 1}})


def test_subset_and_window_rules():
    fixed = real_subsets(100, 10, 3, seed=5, rule="fixed")
    assert all(np.array_equal(t, fixed[0]) for t in fixed)  # videogpt: the same reals in every trial
    assert np.array_equal(fixed[0], real_subsets(100, 10, 1, seed=5, rule="per_trial")[0])  # trial 0 unchanged
    per = real_subsets(100, 10, 3, seed=5, rule="per_trial")
    assert not np.array_equal(per[0], per[1])
    first = real_subsets(100, 10, 2, seed=5, rule="first_n")
    assert all(t.tolist() == list(range(10)) for t in first)  # stylegan_v: the first N
    off = window_offsets(1000, 30, 16, seed=2, rule="random")
    assert off.min() == 0 and off.max() == 14 and len(set(off.tolist())) == 15  # every offset 0..30-16
    assert np.array_equal(off, window_offsets(1000, 30, 16, seed=2, rule="random"))  # seeded
    assert not np.array_equal(off, window_offsets(1000, 30, 16, seed=3, rule="random"))
    assert window_offsets(5, 16, 16, seed=2, rule="random").tolist() == [0] * 5  # no longer source: frames 0..15
    assert window_offsets(5, 30, 16, seed=2, rule="first").tolist() == [0] * 5


@pytest.fixture(scope="module")
def digit_clips(tmp_path_factory):
    """The default data (moving digits, the default run's generator) as a real clip store: 24-frame videos,
    one 24-frame clip each, so 16-frame windows have 9 offsets to draw from."""
    from videogpt.config import DataParams, DefaultDataParams
    from videogpt.data.moving_digits import write_moving_digits
    root = tmp_path_factory.mktemp("digits")
    write_moving_digits(root / "videos", DefaultDataParams(n_train=12, n_test=6, resolution=32, n_frames=24))
    p = DataParams(source=str(root / "videos"), resolution=32, sequence_length=24, num_workers=1)
    build_clip_store(p, root / "clips.zarr", root / "manifest.csv", root / "rejected.csv", progress=False)
    return root / "clips.zarr"


def test_protocols_on_default_data_clips(digit_clips):
    n_test, n_train = clips_array(digit_clips, "test").shape[0], clips_array(digit_clips, "train").shape[0]
    vg = draw_real_sets(EvalParams(n_real=4, n_generated=6, n_trials=3, seed=1), digit_clips)
    assert vg["split"] == "test" and vg["window_frames"] == 16 and vg["clip_frames"] == 24
    assert vg["trials"][0] == vg["trials"][1] == vg["trials"][2] and len(set(vg["trials"][0])) == 4
    assert vg["offsets"][0] == vg["offsets"][2] and all(0 <= o <= 8 for o in vg["offsets"][0])
    t0 = vg["trials"][0]
    assert vg["generated"][0] == t0 + t0[:2]  # 6 generated videos: the trial's real clips cycled
    sgv = draw_real_sets(EvalParams(fvd_protocol="stylegan_v", n_real=5, n_trials=2, seed=1), digit_clips)
    assert sgv["split"] == "train" and sgv["trials"] == [[0, 1, 2, 3, 4]] * 2 and sgv["n_source"] == n_train
    assert sgv["generated"][0] == [i % n_test for i in range(5)]
    with pytest.raises(ParamsError, match="exceeds the 12 clips of the train split"):
        draw_real_sets(EvalParams(fvd_protocol="stylegan_v", n_real=13), digit_clips)


def test_protocol_run_on_real_clips_uses_the_windows(digit_clips, tmp_path):
    """fvd_real_stats with an I3D in the published layout (random values): the statistics are those of the
    windowed clips under the protocol's covariance estimator."""
    from i3d_layout import published_layout_state_dict
    from videogpt.data.clip_store import read_clips_at
    from videogpt.metrics.i3d import i3d_features, load_i3d
    from videogpt.metrics.frechet import load_stats
    weights = tmp_path / "i3d.pt"
    torch.save(published_layout_state_dict(seed=0), weights)
    p = parse({"data": {"resolution": 32, "sequence_length": 24}, "vqvae": {"downsample": [2, 4, 4]},
               "eval": {"i3d_weights": str(weights), "n_real": 3, "n_trials": 1, "batch_size": 3, "seed": 4}})
    info = compute_real_stats(p, clips_path=digit_clips, out_dir=tmp_path / "stats")
    sets = json.loads((tmp_path / "stats/indices.json").read_text())
    assert info["available"] and info["protocol"]["frames"] == 16 and info["protocol"]["comparable_with"] == []
    clips = read_clips_at(digit_clips, "test", sets["trials"][0])
    windows = np.stack([c[o:o + 16] for c, o in zip(clips, sets["offsets"][0])])
    from videogpt.metrics.protocol import real_to_uint8
    feats = i3d_features(load_i3d(weights, "videogpt"), real_to_uint8(windows, "videogpt"))
    mu, sigma, _ = load_stats(tmp_path / "stats/stats_trial000.npz", real_protocol(p, sets))
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False, ddof=1), rtol=1e-6, atol=1e-9)


def test_default_params_label_the_fvd_comparable_with_nothing():
    from videogpt.config import load
    proto = eval_protocol(load("params.yaml").eval)
    rec = proto.record()
    assert (proto.name, proto.n_real, proto.n_generated) == ("videogpt", 64, 64) and rec["comparable_with"] == []


# ------------------------------------------------------------------------------------------------
# StyleGAN-V's TorchScript: opt-in and pinned hash only


class _Tiny(torch.nn.Module):
    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4)).repeat(1, 134)[:, :400]


@pytest.fixture()
def script(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(_Tiny()), str(path))
    return path


def test_torchscript_is_refused_without_opt_in_or_with_another_hash(script):
    with pytest.raises(I3DWeightsError, match="eval.allow_i3d_torchscript: true to opt in"):
        load_feature_network(script, "stylegan_v")
    with pytest.raises(I3DWeightsError, match=r"eval.i3d_weights / eval.allow_i3d_torchscript: refused .*pinned"):
        load_feature_network(script, "stylegan_v", allow_torchscript=True)  # not the pinned file
    with pytest.raises(I3DWeightsError, match="eval.i3d_weights: refused: a TorchScript archive"):
        load_feature_network(script, "videogpt")  # torch.load(weights_only=True) would run it via torch.jit.load
    # the pin is what admits a file: the same script pinned by its own hash loads and runs
    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    model = load_stylegan_v_i3d(script, allow_torchscript=True, pinned_sha256=digest)
    from videogpt.metrics.i3d import i3d_features
    video = np.full((1, 9, 8, 8, 3), 51, np.uint8)
    assert i3d_features(model, video).shape == (1, 400)
    assert i3d_features(model, video)[0, 0] == pytest.approx(51.0)  # fed [0, 255] values, as SGV's network wants


def test_the_report_rows_say_what_an_fvd_is_comparable_with():
    from videogpt.model_card import metric_rows
    small = {"trials": [1.0], "mean": 1.0, "std": 0.0, "n_trials": 1, "comparable_with": [],
             "protocol": fvd_protocol("videogpt", 64).record()}
    (row,) = metric_rows({"fvd": small})
    assert row[2].startswith("comparable with no published number (n_real=64 (the anchor uses 256")
    full = small | {"comparable_with": ["VideoGPT (Yan et al. 2021)"], "protocol": fvd_protocol("videogpt").record()}
    assert metric_rows({"fvd": full})[0][2].startswith("comparable with VideoGPT (Yan et al. 2021); ")


_REAL_WEIGHTS = __import__("os").environ.get("VIDEOGPT_I3D_WEIGHTS")


@pytest.mark.skipif(not _REAL_WEIGHTS, reason="golden check needs the published i3d_pretrained_400.pt: set "
                                              "VIDEOGPT_I3D_WEIGHTS to its path (not downloadable on this host)")
def test_golden_real_weights():
    """With the published weights: the file is the pinned one, and on the default data's videos the two
    flavours' features agree closely (BN eps 1e-3 vs 1e-5 is a small change for trained variances) but not
    exactly."""
    from videogpt.config import DefaultDataParams
    from videogpt.data.moving_digits import make_video, video_digits
    from videogpt.download import I3D_SHA256
    from videogpt.fileio import file_sha256
    from videogpt.metrics.i3d import i3d_features, load_i3d
    assert file_sha256(_REAL_WEIGHTS) == I3D_SHA256
    dp = DefaultDataParams(resolution=64, n_frames=16)

    def video(i):
        digits, rng = video_digits(dp, "test", i)
        return make_video(digits, dp, rng)

    videos = np.stack([video(i) for i in range(4)])
    tf = i3d_features(load_i3d(_REAL_WEIGHTS, "tf"), videos)
    vg = i3d_features(load_i3d(_REAL_WEIGHTS, "videogpt"), videos)
    assert 0 < np.abs(tf - vg).max() < 0.05 * np.abs(tf).max()


def test_bair_preset_runs_videogpt_protocol_as_the_anchor():
    import yaml
    from pathlib import Path
    p = parse(yaml.safe_load(Path("params/presets/bair.yaml").read_text()))
    rec = eval_protocol(p.eval).record()
    assert (rec["fvd_protocol"], rec["n_real"], rec["n_generated"], rec["real_subset"], rec["window"],
            rec["covariance_ddof"], rec["bn_eps"], rec["i3d_protocol"]) == \
        ("videogpt", 256, 256, "fixed", "random", 1, 1e-5, "videogpt")
    assert rec["comparable_with"] == ["VideoGPT (Yan et al. 2021)"] and rec["not_comparable_because"] is None
    assert p.eval.n_trials == 10


def test_stylegan_v_protocol_run_on_real_clips(digit_clips, script, tmp_path, monkeypatch):
    """stylegan_v through fvd_real_stats on the default data's clips, with a scripted stand-in network pinned
    for the test: the first N train clips, their windows, fed as [0, 255] floats, population covariance."""
    import videogpt.metrics.i3d as i3d
    from videogpt.data.clip_store import read_clips_at
    from videogpt.metrics.frechet import load_stats
    monkeypatch.setattr(i3d, "STYLEGAN_V_I3D_SHA256", hashlib.sha256(script.read_bytes()).hexdigest())
    ev = {"i3d_weights": str(script), "fvd_protocol": "stylegan_v", "n_real": 5, "n_trials": 2, "batch_size": 2,
          "seed": 3}
    p = parse({"data": {"resolution": 32, "sequence_length": 24}, "vqvae": {"downsample": [2, 4, 4]}, "eval": ev})
    with pytest.raises(I3DWeightsError, match="eval.allow_i3d_torchscript: true"):
        compute_real_stats(p, clips_path=digit_clips, out_dir=tmp_path / "refused")
    p = parse({"data": {"resolution": 32, "sequence_length": 24}, "vqvae": {"downsample": [2, 4, 4]},
               "eval": ev | {"allow_i3d_torchscript": True}})
    info = compute_real_stats(p, clips_path=digit_clips, out_dir=tmp_path / "stats")
    sets = json.loads((tmp_path / "stats/indices.json").read_text())
    assert sets["trials"] == [[0, 1, 2, 3, 4]] * 2 and info["protocol"]["covariance_ddof"] == 0
    assert info["protocol"]["sqrt"] == "sqrtm" and info["protocol"]["comparable_with"] == []
    clips = read_clips_at(digit_clips, "train", sets["trials"][0])
    windows = np.stack([c[o:o + 16] for c, o in zip(clips, sets["offsets"][0])]).astype(np.float64)
    feats = windows.mean(axis=(1, 2, 3))  # the stand-in: per-channel means of [0, 255] values, tiled to 400
    feats = np.tile(feats, 134)[:, :400]
    mu, sigma, _ = load_stats(tmp_path / "stats/stats_trial001.npz", real_protocol(p, sets))
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-5)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False, ddof=0), rtol=1e-4, atol=1e-6)
