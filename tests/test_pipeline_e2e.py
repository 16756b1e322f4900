"""The real DVC pipeline, end to end, on tiny params in a temporary copy of the repository."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "default_data": {"n_train": 12, "n_test": 4, "resolution": 32, "n_frames": 8, "digit_size": 14, "fps": 8},
    "data": {"resolution": 16, "sequence_length": 4, "num_workers": 2},
    "vqvae": {"n_hiddens": 16, "res_hiddens": 8, "n_res_layers": 1, "downsample": [2, 4, 4], "n_codes": 16,
              "embedding_dim": 8, "max_steps": 6, "batch_size": 4, "checkpoint_every": 3, "val_every": 3},
    "tokenize": {"batch_size": 8},
    "prior": {"n_layer": 1, "n_head": 2, "n_embd": 16, "max_steps": 6, "warmup_steps": 0, "batch_size": 4,
              "checkpoint_every": 3, "val_every": 3},
    "sample": {"n_samples": 2, "batch_size": 2},
    "eval": {"n_real": 4, "batch_size": 2},
    "trainer": {"log_every_n_steps": 2},
}


def run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git + DVC copy of the working tree (tracked and untracked, not ignored) with tiny params."""
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        run(cmd, dst, env)
    return dst, env


@pytest.fixture(scope="module")
def reproduced(repo):
    dst, env = repo
    out = run([sys.executable, "-m", "dvc", "repro"], dst, env, timeout=900)
    return dst, env, out


def test_repro_writes_every_declared_out(reproduced):
    dst, env, _ = reproduced
    dvc = yaml.safe_load((dst / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        for kind in ("outs", "metrics"):
            for out in stage.get(kind, []):
                path = next(iter(out)) if isinstance(out, dict) else out
                assert (dst / path).exists(), f"{name}: {path} missing"
    clips = zarr.open_group(str(dst / "data/clips.zarr"), mode="r")
    assert clips["train"]["clips"].shape[1:] == (4, 16, 16, 3)
    tokens = zarr.open_group(str(dst / "data/tokens.zarr"), mode="r")
    assert tokens["train"]["tokens"].shape[1:] == (2, 4, 4)
    assert tokens["train"]["tokens"].dtype == np.uint8
    samples = zarr.open_group(str(dst / "samples/samples.zarr"), mode="r")
    assert samples["videos"].shape == (2, 4, 16, 16, 3)
    assert len(list((dst / "samples/mp4").glob("*.mp4"))) == 2
    assert (dst / "samples/grid.gif").stat().st_size > 0 and (dst / "samples/grid.png").stat().st_size > 0
    vq = json.loads((dst / "metrics/vqvae.json").read_text())
    assert vq["steps"] == 6 and 0 < vq["codes_used"] <= 1
    prior = json.loads((dst / "metrics/prior.json").read_text())
    assert prior["val_bits_per_dim"] > 0
    for curve in ("vqvae/plots/metrics/train/recon_loss.tsv", "prior/plots/metrics/train/bits_per_dim.tsv"):
        assert len((dst / "dvclive" / curve).read_text().splitlines()) > 1, curve  # dvc plots has data
    ev = json.loads((dst / "metrics/eval.json").read_text())
    assert ev["fvd"]["value"] is None and "I3D" in ev["fvd"]["reason"]


def test_second_repro_has_nothing_to_do(reproduced):
    dst, env, _ = reproduced
    out = run([sys.executable, "-m", "dvc", "status"], dst, env)
    assert "up to date" in out, out


def test_forced_rerun_reproduces_every_output_bitwise(reproduced):
    """Same params and seed on CPU: a forced re-run of every stage gives the same hash for every out."""
    dst, env, _ = reproduced
    def hashes():
        lock = yaml.safe_load((dst / "dvc.lock").read_text())
        return {(name, out["path"]): out.get("md5") for name, stage in lock["stages"].items()
                for out in stage.get("outs", []) if not out["path"].startswith("dvclive")}
    before = hashes()
    run([sys.executable, "-m", "dvc", "repro", "-f"], dst, env, timeout=900)
    assert hashes() == before


def test_exp_run_reruns_only_the_prior_and_after(reproduced):
    dst, env, _ = reproduced
    run(["git", "add", "-A"], dst, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], dst, env)
    out = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "prior.n_layer=2"], dst, env, timeout=900)
    assert "Running stage 'train_prior'" in out
    for skipped in ("preprocess", "train_vqvae", "tokenize"):
        assert f"Running stage '{skipped}'" not in out
    show = run([sys.executable, "-m", "dvc", "exp", "show", "--csv"], dst, env)
    assert "val_bits_per_dim" in show
    # the paper-style table from the two real experiments (baseline n_layer=1, experiment n_layer=2)
    out = run([sys.executable, "-m", "pipeline.tables", "prior_size", "--out-dir", "reports/tables"], dst, env)
    csv = (dst / "reports/tables/prior_size.csv").read_text().splitlines()
    assert len(csv) == 3, out  # header + two rows
    assert [row.split(",")[0] for row in csv[1:]] == ["1", "2"], csv


def test_exp_run_of_a_longer_video_reruns_only_sample_and_evaluate(reproduced):
    """sample.n_frames=48 (12x the 4-frame clips): only the sample stage and what reads the samples run again,
    and the samples are 48 frames long, by the sliding window."""
    dst, env, _ = reproduced
    out = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "sample.n_frames=48"], dst, env, timeout=900)
    assert "Running stage 'sample'" in out and "Running stage 'evaluate'" in out
    for skipped in ("make_default_data", "preprocess", "train_vqvae", "tokenize", "train_prior", "fvd_real_stats"):
        assert f"Running stage '{skipped}'" not in out
    videos = zarr.open_group(str(dst / "samples/samples.zarr"), mode="r")["videos"]
    assert videos.shape == (2, 48, 16, 16, 3)
    assert len(list((dst / "samples/mp4").glob("*.mp4"))) == 2 and (dst / "samples/grid.gif").is_file()
    fvd = json.loads((dst / "metrics/eval.json").read_text())["fvd"]
    assert fvd["value"] is None and fvd["protocol"]["generated_frames"] == 48
