"""FVD through the real DVC pipeline: 16-frame clips, an I3D weight file in the published layout (random values),
FVD trials, the stages `dvc exp run` re-runs when the trials or the weights change, and the paper table.

Tiny on purpose: 3 real clips per trial out of a 5-clip test split, 2 trials, then 3; about 45 I3D forwards."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from dvc_repo import TINY, commit, copy_repo, dvc, run
from i3d_layout import published_layout_state_dict

# The tiny pipeline with 16-frame clips (4x4x4 downsampling: 4x4x4 latents) and FVD trials
TINY16 = {**TINY, "default_data": TINY["default_data"] | {"n_train": 10, "n_test": 5, "n_frames": 16},
          "data": TINY["data"] | {"sequence_length": 16, "num_workers": 1},
          "vqvae": TINY["vqvae"] | {"downsample": [4, 4, 4], "max_steps": 4, "checkpoint_every": 4, "val_every": 4},
          "prior": TINY["prior"] | {"max_steps": 4, "checkpoint_every": 4, "val_every": 4},
          "sample": {"n_samples": 2, "batch_size": 6},
          "eval": {"n_real": 3, "n_generated": 4, "n_trials": 2, "seed": 1, "batch_size": 3}}


def ran(out: str) -> set[str]:
    return {s for s in ("make_default_data", "preprocess", "fvd_real_stats", "train_vqvae", "tokenize",
                        "train_prior", "sample", "evaluate") if f"Running stage '{s}'" in out}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    weights = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(published_layout_state_dict(seed=0), weights)
    dst = tmp_path_factory.mktemp("fvd_repo")
    env = copy_repo(dst, TINY16 | {"eval": TINY16["eval"] | {"i3d_weights": str(weights)}})
    out = dvc(dst, env, "repro")
    commit(dst, env, "baseline")
    return dst, env, out


def test_repro_with_weights_writes_numeric_fvds_per_trial(repo):
    dst, env, out = repo
    # fvd_real_stats runs right after preprocess: a too-small test split would stop the run before training
    assert out.index("Running stage 'fvd_real_stats'") < out.index("Running stage 'train_vqvae'")
    indices = json.loads((dst / "cache/i3d_real_stats/indices.json").read_text())
    assert indices["n_source"] == 5 and len(indices["trials"]) == 2 and all(len(t) == 3 for t in indices["trials"])
    assert indices["trials"][0] == indices["trials"][1]  # the videogpt protocol: one real subset for all trials
    samples = zarr.open_group(str(dst / "samples/samples.zarr"), mode="r")
    assert samples["videos"].shape == (8, 16, 16, 16, 3)  # 2 trials x 4 generated (eval.n_generated), 16 frames
    t0 = indices["trials"][0]
    assert samples["real_index"][:].tolist() == (t0 + t0[:1]) * 2  # conditioning clips: the reals cycled
    ev = json.loads((dst / "metrics/eval.json").read_text())
    for key in ("fvd", "r_fvd", "fvd_star"):
        e = ev[key]
        assert e["reason"] is None and e["n_trials"] == 2 and all(v > 0 for v in e["trials"]), (key, e)
        assert e["mean"] == pytest.approx(np.mean(e["trials"])) and e["std"] == pytest.approx(np.std(e["trials"]))
        p = e["protocol"]
        assert (p["fvd_protocol"], p["i3d_protocol"], p["bn_eps"], p["frames"], p["n_real"], p["n_generated"],
                p["n_trials"], p["covariance_ddof"]) == ("videogpt", "videogpt", 1e-5, 16, 3, 4, 2, 1)
        assert e["comparable_with"] == [] and "n_real=3 (the anchor uses 256" in p["not_comparable_because"][0]
        assert p["weights_sha256"] and p["indices_sha256"] and p["seed"] == 1 and p["condition"] == "none"
    assert ev["recon"]["nmse"]["n_trials"] == 2 and ev["recon"]["nmse"]["mean"] > 0


def recon_cache_files(env) -> set[str]:
    return {p.name for p in (Path(env["VIDEOGPT_CACHE"]) / "recon_rows").glob("*.npy")}


def test_more_trials_rerun_only_what_they_must(repo):
    dst, env, _ = repo
    cached = recon_cache_files(env)
    assert cached  # the baseline's reconstructions' rows (MSE, I3D features), by batch
    first_ev = json.loads((dst / "metrics/eval.json").read_text())
    out = dvc(dst, env, "exp", "run", "-S", "eval.n_trials=3")
    assert ran(out) == {"fvd_real_stats", "sample", "evaluate"}, out
    ev = json.loads((dst / "metrics/eval.json").read_text())
    fvd = ev["fvd"]
    assert fvd["n_trials"] == 3 and len(fvd["trials"]) == 3
    a, b, c = fvd["trials"]
    mean = (a + b + c) / 3  # by hand: the mean and the population std of the three trials
    assert fvd["mean"] == pytest.approx(mean, rel=1e-12)
    assert fvd["std"] == pytest.approx((((a - mean) ** 2 + (b - mean) ** 2 + (c - mean) ** 2) / 3) ** 0.5, rel=1e-9)
    # trial t's real subset and generated videos depend on (seed, t) only: the first two trials are unchanged
    first = json.loads(run(["git", "show", "HEAD:metrics/eval.json"], dst, env))["fvd"]["trials"]
    assert fvd["trials"][:2] == pytest.approx(first, rel=1e-3)  # up to I3D batching round-off
    # the same VQ-VAE and the same real clips (one subset for all trials): every reconstruction row came from the
    # cache (a miss always writes one), so NMSE is the baseline's to the bit
    assert recon_cache_files(env) == cached
    assert ev["recon"]["nmse"]["trials"][:2] == first_ev["recon"]["nmse"]["trials"]
    assert ev["r_fvd"]["trials"][:2] == pytest.approx(first_ev["r_fvd"]["trials"], rel=1e-6)


def test_without_weights_fvd_is_null_for_want_of_weights_and_sampling_is_not_redone(repo):
    dst, env, _ = repo
    out = dvc(dst, env, "exp", "run", "-S", "eval.i3d_weights=null")
    assert ran(out) == {"fvd_real_stats", "evaluate"}, out  # same real subsets: the samples stay valid
    ev = json.loads((dst / "metrics/eval.json").read_text())
    for key in ("fvd", "r_fvd", "fvd_star"):
        assert ev[key]["mean"] is None and ev[key]["reason"].startswith("no I3D weights"), ev[key]
    assert ev["recon"]["psnr"]["mean"] > 0  # measured on the same subsets without I3D


def test_table_shows_mean_and_std_of_trials(repo):
    """The baseline's row shows its FVD with the spread over its trials; the experiments that changed eval.n_trials
    or eval.i3d_weights measured under other protocols and are left out, each named with the key that differs."""
    dst, env, _ = repo
    out = run([sys.executable, "-m", "pipeline.tables", "prior_size", "--out-dir", "reports/tables"], dst, env)
    md = (dst / "reports/tables/prior_size.md").read_text()
    three = json.loads((dst / "metrics/eval.json").read_text())  # the workspace: the last experiment
    rows = [line for line in md.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1 and "(trials ± " in rows[0] and "(baseline)" in rows[0], md  # 2 trials of the baseline
    refused = md.split("Not comparable, left out:")[1]
    assert "eval.n_trials: 3 vs 2" in refused and "eval.i3d_weights: null vs" in refused, out
    assert three["fvd"]["mean"] is None