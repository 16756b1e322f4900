"""Lightning DDP on two CUDA devices (NCCL, bf16-mixed): the ranks see different batches and end with the same
parameters and codebook buffers, and the control without codebook sync does not (as tests/test_ddp.py on CPU)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_ddp import ddp_env, STEPS, check_ok, differing, load_ranks  # noqa: F401 (ddp_env: the fixture)

WORKER = Path(__file__).resolve().parent / "ddp_gpu_worker.py"
pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


@pytest.fixture(scope="module")
def gpu_ddp_run(ddp_env):
    tmp, env = ddp_env
    out = tmp / "gpu_modules"
    check_ok(subprocess.run([sys.executable, str(WORKER), str(tmp / "clips.zarr"), str(out), str(STEPS)], cwd=tmp,
                            env=env, capture_output=True, text=True, timeout=600), "DDP worker on two GPUs")
    return out


@pytest.mark.parametrize("name", ["vqvae", "prior"])
def test_gpu_ranks_train_on_different_data_and_stay_in_sync(gpu_ddp_run, name):
    r0, r1 = load_ranks(gpu_ddp_run, name)
    assert r0["world_size"] == r1["world_size"] == 2 and r0["global_step"] == r1["global_step"] == STEPS
    assert r0["batch_sums"] != r1["batch_sums"]
    # BatchNorm statistics are per rank (the worker does not use SyncBatchNorm), as on CPU
    assert not differing(r0["state"], r1["state"], bn_stats=False)


def test_gpu_codebook_without_sync_drifts(gpu_ddp_run):
    r0, r1 = load_ranks(gpu_ddp_run, "vqvae_nosync")
    bad = differing(r0["state"], r1["state"], bn_stats=False)
    assert {"codebook.embeddings", "codebook.N", "codebook.z_avg"} <= bad.keys(), bad
