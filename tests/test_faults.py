"""Fault tests that really inject the fault: SIGKILL mid-training, a malicious checkpoint, a NaN loss,
a full disk. Each stage runs as a subprocess in a temporary working directory, as DVC runs it."""
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from videogpt.config import parse, to_dict

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "default_data": {"n_train": 10, "n_test": 4, "resolution": 32, "n_frames": 8, "digit_size": 14},
    "data": {"resolution": 16, "sequence_length": 4, "num_workers": 1},
    "vqvae": {"n_hiddens": 16, "res_hiddens": 8, "n_res_layers": 1, "n_codes": 16, "embedding_dim": 8,
              "max_steps": 6, "batch_size": 4, "checkpoint_every": 3, "val_every": 3},
    # dropout, attn_dropout, lr and warmup_steps: the values these tests were written with (the schema's
    # defaults now follow params.yaml's default run, whose warm-up is longer than 6 steps)
    "prior": {"n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.2, "attn_dropout": 0.3, "lr": 3e-4,
              "warmup_steps": 0, "max_steps": 6, "batch_size": 4, "checkpoint_every": 3, "val_every": 3},
    "eval": {"n_real": 3, "n_trials": 2},
    "trainer": {"accelerator": "cpu", "log_every_n_steps": 1},  # CPU bytes on a GPU host too
}


def write_params(workdir: Path, **sections):
    params = to_dict(parse({}))
    for name, values in (TINY | sections).items():
        params[name].update(values)
    parse(params)  # the test itself must use valid params
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage(name: str, workdir: Path, *, check=True, preexec_fn=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)
    if check:
        assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
    """A working directory with the tiny default videos preprocessed into a clip store."""
    d = tmp_path_factory.mktemp("faults")
    write_params(d)
    stage("make_default_data", d)
    stage("preprocess", d)
    return d


@pytest.fixture
def workdir(clips_dir, tmp_path):
    """A fresh copy of the clip store directory for one test."""
    import shutil
    shutil.copytree(clips_dir / "data", tmp_path / "data", symlinks=True)
    shutil.copy(clips_dir / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def kill_after_first_checkpoint(workdir: Path) -> int:
    """Start train_vqvae, SIGKILL it (pre-emption: no chance to clean up) once it has written a
    checkpoint, and return the step of that checkpoint."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "stages.train_vqvae"], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = workdir / "checkpoints" / "vqvae" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.exists(), "no checkpoint was written before the kill"
    assert not (workdir / "models" / "vqvae" / "model.safetensors").exists()
    return torch.load(last, weights_only=True)["global_step"]


LONG_RUN = TINY["vqvae"] | {"max_steps": 400, "checkpoint_every": 20, "val_every": 200}


def test_sigkilled_training_resumes_from_its_last_checkpoint(workdir):
    write_params(workdir, vqvae=LONG_RUN)
    killed_at = kill_after_first_checkpoint(workdir)
    assert 0 < killed_at < 400
    out = stage("train_vqvae", workdir).stdout
    start = int(out.split("start_step=")[1].split()[0])
    assert start >= killed_at, out  # resumed, not started over
    assert json.loads((workdir / "metrics" / "vqvae.json").read_text())["steps"] == 400
    assert not any((workdir / "checkpoints" / "vqvae").iterdir())  # finished: checkpoints cleared


def test_changed_params_start_fresh(workdir):
    write_params(workdir, vqvae=LONG_RUN)
    kill_after_first_checkpoint(workdir)
    write_params(workdir, vqvae=LONG_RUN | {"max_steps": 30, "lr": 1e-3})
    out = stage("train_vqvae", workdir).stdout
    assert "start_step=0" in out


def test_clip_store_that_disagrees_with_params_is_rejected_before_training(workdir):
    write_params(workdir, data=TINY["data"] | {"resolution": 32})  # the store holds 16x16 clips
    proc = stage("train_vqvae", workdir, check=False)
    assert proc.returncode != 0
    assert "data.resolution: params say 32 but" in proc.stderr and "Traceback" not in proc.stderr
    assert not (workdir / "checkpoints").exists()


class _Exploit:
    """Unpickling this runs a shell command: what a crafted checkpoint from a stranger could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_without_running_code(workdir):
    write_params(workdir, vqvae=LONG_RUN)
    kill_after_first_checkpoint(workdir)  # an interrupted run, whose checkpoint a stranger then replaces
    marker = workdir / "pwned"
    ckpt = workdir / "checkpoints" / "vqvae" / "last.ckpt"
    with open(ckpt, "wb") as fh:
        pickle.dump({"state_dict": {}, "payload": _Exploit(marker)}, fh)
    proc = stage("train_vqvae", workdir, check=False)
    assert proc.returncode != 0
    assert "refused to load this checkpoint" in proc.stderr and str(ckpt.name) in proc.stderr
    assert not marker.exists()


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(clips_dir, tmp_path, monkeypatch):
    from videogpt import lightning, training
    from videogpt.lightning import NonFiniteLossError

    params = parse(yaml.safe_load((clips_dir / "params.yaml").read_text()) |
                   {"vqvae": TINY["vqvae"] | {"max_steps": 20, "checkpoint_every": 2, "val_every": 100}})
    original = lightning.as_video  # where the module turns the loader's uint8 clips into float video
    calls = {"n": 0}

    def poisoned(video):  # the fault: after 4 batches the data turn into NaN
        calls["n"] += 1
        return original(video) * (float("nan") if calls["n"] > 4 else 1.0)

    monkeypatch.setattr(lightning, "as_video", poisoned)
    ckpt_dir = tmp_path / "ckpt"
    with pytest.raises(NonFiniteLossError, match="NaN or inf"):
        training.train_vqvae(params, clips_path=clips_dir / "data/clips.zarr",
                             manifest_path=clips_dir / "data/manifest.csv", model_dir=tmp_path / "model",
                             ckpt_dir=ckpt_dir, live_dir=tmp_path / "live", metrics_path=tmp_path / "m.json",
                             picture_path=tmp_path / "p.png")
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert 0 < ckpt["global_step"] <= 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "model").exists()


def _disk_full():
    # RLIMIT_FSIZE makes any write past 1 KiB fail with EFBIG, as a full disk fails with ENOSPC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


def test_disk_full_gives_one_clear_line_and_no_complete_looking_out(clips_dir, tmp_path):
    write_params(tmp_path, data=TINY["data"] | {"source": str(clips_dir / "data" / "default_videos")})
    proc = stage("preprocess", tmp_path, check=False, preexec_fn=_disk_full)
    assert proc.returncode != 0
    assert "preprocess: cannot write its outputs" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "clips.zarr").exists()
    assert not (tmp_path / "data" / "manifest.csv").exists()


def test_same_seed_gives_identical_models_tokens_and_samples(workdir, tmp_path_factory):
    import shutil
    other = tmp_path_factory.mktemp("again")
    shutil.copytree(workdir / "data", other / "data", symlinks=True)
    shutil.copy(workdir / "params.yaml", other / "params.yaml")
    for d in (workdir, other):
        for name in ("fvd_real_stats", "train_vqvae", "tokenize", "train_prior", "sample"):
            stage(name, d)
    for rel in ("models/vqvae/model.safetensors", "models/prior/model.safetensors"):
        assert (workdir / rel).read_bytes() == (other / rel).read_bytes(), rel
    import zarr
    for split in ("train", "test"):
        a = zarr.open_group(str(workdir / "data/tokens.zarr"), mode="r")[split]["tokens"][:]
        b = zarr.open_group(str(other / "data/tokens.zarr"), mode="r")[split]["tokens"][:]
        np.testing.assert_array_equal(a, b)
    a = zarr.open_group(str(workdir / "samples/samples.zarr"), mode="r")["videos"][:]
    b = zarr.open_group(str(other / "samples/samples.zarr"), mode="r")["videos"][:]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("condition", ["class", "frames", "frames+actions"])
def test_conditional_priors_run_through_the_stages(workdir, condition):
    """Not a fault: the conditional priors through the same stage scripts, conditioned on the FVD trials' real
    clips (their labels / first frames / actions): one generated video per real clip of each trial."""
    write_params(workdir, prior=TINY["prior"] | {"condition": condition, "n_cond_frames": 1, "resnet_dim": 8},
                 sample={"n_samples": 2, "batch_size": 2})
    for name in ("fvd_real_stats", "train_vqvae", "tokenize", "train_prior", "sample"):
        stage(name, workdir)
    import zarr
    trials = json.loads((workdir / "cache/i3d_real_stats/indices.json").read_text())["trials"]
    samples = zarr.open_group(str(workdir / "samples/samples.zarr"), mode="r")
    order = [i for t in trials for i in t]
    assert len(trials) == 2 and samples["real_index"][:].tolist() == order
    assert samples["videos"].shape == (6, 4, 16, 16, 3) and samples["tokens"].shape[0] == 6
    assert len(list((workdir / "samples/mp4").glob("*.mp4"))) == 2  # sample.n_samples: the viewable ones
    labels = zarr.open_group(str(workdir / "data/clips.zarr"), mode="r")["test"]["labels"][:]
    assert samples.attrs["condition"] == condition
    assert samples.attrs["labels"] == ([int(labels[i]) for i in order] if condition == "class" else None)
    if "frames" in condition:
        assert "included, as generated" in samples.attrs["conditioning_frames_in_videos"]
    if "actions" in condition:
        assert "per-frame actions of 4 frames" in samples.attrs["conditioning"]
