"""DDP keeps the ranks in sync: after a few VQ-VAE and prior training steps with Lightning strategy=ddp on two CPU
processes (gloo), every parameter and the codebook's buffers (embeddings, N, z_avg, initialized) are bitwise
identical on both ranks, although each rank trained on different clips (DistributedSampler).

The training runs in tests/ddp_worker.py (Lightning's DDP launcher re-executes the script for rank 1). The same
worker repeats the VQ-VAE run with the codebook's DDP calls disabled, and that control must come out different:
the comparison can tell a synchronised codebook from one that is not.

BatchNorm running statistics are compared only where BatchNorm is synchronised (SyncBatchNorm, CUDA only). On CPU
each rank updates them from its own batch; DDP re-broadcasts rank 0's values at the start of every forward
(broadcast_buffers), and rank 0's model is the one saved, so they differ by the last step's local update only.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "ddp_worker.py"
STEPS = 3
CODEBOOK = ("codebook.embeddings", "codebook.N", "codebook.z_avg", "codebook.initialized")


def write_clip_store(path: Path, n: int = 32, shape=(4, 16, 16)) -> None:
    """A tiny clip store in the contract layout: <split>/clips (N,T,H,W,3) uint8, <split>/labels (N,) int32."""
    rng = np.random.default_rng(0)
    root = zarr.open_group(str(path), mode="w")
    for split in ("train", "test"):
        g = root.create_group(split)
        g.create_array("clips", data=rng.integers(0, 256, (n, *shape, 3), dtype=np.uint8),
                       chunks=(1, *shape, 3))
        g.create_array("labels", data=np.arange(n, dtype=np.int32) % 10)
    root.attrs.update({"class_names": [str(i) for i in range(10)], "resolution": shape[1],
                       "sequence_length": shape[0]})


@pytest.fixture(scope="module")
def ddp_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    write_clip_store(tmp / "clips.zarr")
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return tmp, env


def run_worker(mode: str, tmp: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), mode, str(tmp / "clips.zarr"), str(tmp / mode), str(STEPS)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=240)


def check_ok(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def ddp_run(ddp_env):
    tmp, env = ddp_env
    check_ok(run_worker("modules", tmp, env), "DDP worker (modules)")
    return tmp / "modules"


def load_ranks(out: Path, name: str) -> tuple[dict, dict]:
    files = [out / f"{name}_rank{r}.pt" for r in (0, 1)]
    missing = [f.name for f in files if not f.is_file()]
    assert not missing, f"missing rank outputs {missing} in {sorted(p.name for p in out.iterdir())}"
    return tuple(torch.load(f, weights_only=True) for f in files)


BN_STATS = ("running_mean", "running_var")


def differing(a: dict, b: dict, *, bn_stats: bool) -> dict:
    """{key: max abs difference} of the state entries that are not bitwise equal; BatchNorm running
    statistics only when bn_stats."""
    assert a.keys() == b.keys()
    keys = [k for k in a if bn_stats or not k.endswith(BN_STATS)]
    return {k: float((a[k].double() - b[k].double()).abs().max()) for k in keys if not torch.equal(a[k], b[k])}


def assert_in_sync(r0: dict, r1: dict, what: str) -> None:
    s0, s1 = r0["state"], r1["state"]
    bad = differing(s0, s1, bn_stats=False)  # the worker runs on CPU: BatchNorm statistics are per rank
    assert not bad, f"{what}: state differs between ranks after {STEPS} DDP steps: {bad}"


@pytest.mark.parametrize("name", ["vqvae", "prior"])
def test_ranks_trained_on_different_data(ddp_run, name):
    r0, r1 = load_ranks(ddp_run, name)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["global_step"] == r1["global_step"] == STEPS
    assert len(r0["batch_sums"]) == len(r1["batch_sums"]) == STEPS
    assert r0["batch_sums"] != r1["batch_sums"], "both ranks saw the same batches: no DistributedSampler?"


@pytest.mark.parametrize("name", ["vqvae", "prior"])
def test_parameters_and_buffers_identical_across_ranks(ddp_run, name):
    r0, r1 = load_ranks(ddp_run, name)
    assert_in_sync(r0, r1, name)
    s0 = r0["state"]
    if name == "vqvae":
        assert all(k in s0 for k in CODEBOOK)
        assert bool(s0["codebook.initialized"]), "codebook was never initialised"


def test_training_changed_the_state(ddp_run):
    """Guard against a vacuous pass (identical because nothing trained): the codebook moved off its init,
    and the EMA counts are not all equal."""
    s = load_ranks(ddp_run, "vqvae")[0]["state"]
    assert float(s["codebook.N"].std()) > 0
    assert float(s["codebook.N"].sum()) > 0


def test_control_without_codebook_sync_diverges(ddp_run):
    """With the codebook's all-reduce/broadcast switched off, its buffers differ between ranks, so the test
    above would catch a codebook that is not synchronised (DDP's own buffer broadcast at the start of each
    forward does not hide it: the last step's EMA update happens after that broadcast)."""
    r0, r1 = load_ranks(ddp_run, "vqvae_nosync")
    bad = differing(r0["state"], r1["state"], bn_stats=False)
    assert {"codebook.embeddings", "codebook.N", "codebook.z_avg"} <= bad.keys(), bad


@pytest.fixture(scope="module")
def stage_run(ddp_env):
    tmp, env = ddp_env
    check_ok(run_worker("stage", tmp, env), "train_vqvae under CPU DDP")
    return tmp / "stage"


def test_train_vqvae_stage_under_cpu_ddp(stage_run):
    """The train_vqvae stage function itself with trainer.devices=2, strategy=ddp, accelerator=cpu: it runs,
    and its two ranks end in sync."""
    tmp = stage_run.parent
    r0, r1 = load_ranks(tmp / "stage", "stage_vqvae")
    assert r0["batch_sums"] != r1["batch_sums"]
    assert_in_sync(r0, r1, "train_vqvae")
    assert (tmp / "stage" / "model" / "model.safetensors").is_file()


def test_end_of_training_report_is_shared_by_the_ranks_and_equals_one_rank(stage_run):
    """train_vqvae's reconstruction report under 2-rank DDP: each rank computed every other test batch, and the
    combined numbers equal the report one process computes alone with the saved model (counts-derived values
    bitwise, means within 1e-6)."""
    import json

    from torch.utils.data import DataLoader

    from videogpt.checkpoint import load_vqvae
    from videogpt.data.dataset import ClipDataset
    from videogpt.metrics.reports import reconstruction_report

    out, tmp = stage_run, stage_run.parent
    shares = [json.loads((out / f"report_batches_rank{r}.json").read_text()) for r in (0, 1)]
    test = ClipDataset(tmp / "clips.zarr", "test")
    n_batches = -(-len(test) // 4)  # ddp_worker.BATCH
    assert sorted(shares[0] + shares[1]) == list(range(n_batches)) and len(shares[0]) == len(shares[1])
    two = json.loads((out / "metrics.json").read_text())
    one = reconstruction_report(load_vqvae(out / "model"), DataLoader(test, batch_size=4), 16)
    for key in ("perplexity", "codes_used", "n_clips"):
        assert two[key] == one[key], key
    for key in ("nmse", "psnr"):
        assert abs(two[key] - one[key]) <= 1e-6 * abs(one[key]), key


def test_bits_per_dim_under_ddp_equals_one_rank(ddp_run):
    """Both ranks computed bits/dim together after the prior's DDP run; it equals one process's value with rank 0's
    saved weights, and both ranks returned it."""
    import json

    from torch.utils.data import DataLoader

    from ddp_worker import BATCH, RandomTokens
    from videogpt.metrics.reports import bits_per_dim
    from videogpt.prior import Prior, PriorConfig

    ranks = [json.loads((ddp_run / f"bits_rank{r}.json").read_text()) for r in (0, 1)]
    state = load_ranks(ddp_run, "prior")[0]["state"]
    cfg = PriorConfig(latent_shape=(2, 4, 4), n_codes=16, embedding_dim=8, n_layer=2, n_head=2, n_embd=24)
    prior = Prior(cfg, state["codebook"])
    prior.load_state_dict(state)
    one = bits_per_dim(prior, DataLoader(RandomTokens(32, cfg.latent_shape, cfg.n_codes), batch_size=BATCH))
    assert ranks[0] == ranks[1]
    assert abs(ranks[0] - one) <= 1e-6 * one
