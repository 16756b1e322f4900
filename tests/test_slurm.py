"""srun without torchrun: the SLURM variables (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, no WORLD_SIZE) give
each process its rank, in the project's own helpers (videogpt.distributed) as in Lightning's Trainer, and no two
ranks write the same output file. The environment is faked: two local processes with the variables srun sets."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from test_ddp import write_clip_store

from videogpt.config import ParamsError, TrainerParams
from videogpt.distributed import launch_env, launched_as_rank_zero

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "slurm_worker.py"
LAUNCHER_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED",
                 "LOCAL_WORLD_SIZE", "GROUP_RANK")


def slurm_env(procid: int, ntasks: int, port: int | None = None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith("SLURM_")}
    env.update(SLURM_PROCID=str(procid), SLURM_NTASKS=str(ntasks), SLURM_LOCALID=str(procid), SLURM_NODEID="0",
               SLURM_NTASKS_PER_NODE=str(ntasks), SLURM_NNODES="1", SLURM_JOB_NODELIST="127.0.0.1",
               SLURM_NODELIST="127.0.0.1", SLURM_JOB_ID="4242", SLURM_JOB_NAME="videogpt", **extra)
    if port is not None:
        env["MASTER_PORT"] = str(port)
    return env


def fake_srun(monkeypatch, procid: int, ntasks: int) -> None:
    for k in LAUNCHER_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in slurm_env(procid, ntasks).items():
        if k.startswith("SLURM_"):
            monkeypatch.setenv(k, v)


def test_launch_env_reads_srun_variables(monkeypatch):
    fake_srun(monkeypatch, 3, 4)
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert launch_env() == (3, 4, 1)
    assert not launched_as_rank_zero()
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert launched_as_rank_zero()
    # Lightning's rule: a job named "interactive" (or "bash") is not an srun launch; torchrun's variables then count
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")
    assert launch_env() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert launch_env() == (1, 2, 0)
    assert not launched_as_rank_zero()


def test_a_task_layout_the_trainer_does_not_expect_is_refused_naming_the_keys(monkeypatch):
    from videogpt.training import check_launch
    fake_srun(monkeypatch, 0, 4)
    with pytest.raises(ParamsError, match=r"trainer\.devices, trainer\.num_nodes.*started 4 processes"):
        check_launch(TrainerParams(devices=1))
    check_launch(TrainerParams(devices=4))
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2(x2)")  # 2 nodes x 2 tasks
    with pytest.raises(ParamsError, match="SLURM_NTASKS_PER_NODE=2"):
        check_launch(TrainerParams(devices=4))
    check_launch(TrainerParams(devices=2, num_nodes=2))


@pytest.fixture(scope="module")
def srun_run(tmp_path_factory):
    """Two fake srun tasks run train_prior, then two more tokenize; returns (work dir, out dir, [rank 0's record, rank 1's])."""
    import torch

    from videogpt.checkpoint import load_vqvae
    from videogpt.saved import fingerprint, save_model
    import videogpt.tokens as tokens
    from videogpt.tokens import build_token_store
    from videogpt.vqvae import VQVAE, VQVAEConfig

    work = tmp_path_factory.mktemp("srun")
    write_clip_store(work / "clips.zarr")
    torch.manual_seed(0)
    cfg = VQVAEConfig(input_shape=(4, 16, 16), n_hiddens=16, res_hiddens=8, n_res_layers=1, downsample=(2, 4, 4),
                      n_codes=16, embedding_dim=8, n_heads=2)
    save_model(work / "vqvae", VQVAE(cfg).eval(), cfg)
    block, tokens.BLOCK = tokens.BLOCK, 4  # 8 chunks (objects) of 4 grids per split: shards to deal to the ranks
    try:
        build_token_store(load_vqvae(work / "vqvae"), work / "clips.zarr", work / "tokens.zarr", fingerprint=fingerprint(work / "vqvae"),
                          progress=False)
    finally:
        tokens.BLOCK = block
    out = work / "out"
    ranks = [{}, {}]
    for phase in ("train", "tokenize"):  # two stages: two sruns, each its own processes and rendezvous
        for r, seen in enumerate(run_two_tasks(phase, work, out)):
            writes = ranks[r].pop("writes", []) + seen.pop("writes")
            ranks[r].update(seen, writes=writes)
    return work, out, ranks


def run_two_tasks(phase: str, work: Path, out: Path, timeout: float = 300) -> list[dict]:
    """Two fake srun tasks of tests/slurm_worker.py `phase`; their records, rank 0's first. A pair that does not
    finish in `timeout` seconds is killed and the test fails with both outputs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, str(WORKER), phase, str(work), str(out)], cwd=work,
                              env=slurm_env(r, 2, port, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        logs = [p.communicate()[0] for p in procs]
        pytest.fail(f"the two srun tasks of {phase} did not finish in {timeout:g} s:\n" + "\n".join(
            f"--- rank {r} (exit {p.returncode}):\n{log[-3000:]}" for r, (p, log) in enumerate(zip(procs, logs))))
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    return [json.loads((work / f"{phase}_rank{r}.json").read_text()) for r in range(2)]


def test_each_srun_task_gets_its_rank_in_the_trainer_and_the_helpers(srun_run):
    _, _, ranks = srun_run
    for r, seen in enumerate(ranks):
        assert seen["launch_env"] == [r, 2, r]
        assert (seen["trainer_rank"], seen["trainer_world"]) == (r, 2)
        assert seen["environment"] == "SLURMEnvironment"  # Lightning started no processes of its own
        assert seen["steps"] == 2
        assert seen["reported"] == (r == 0)  # rank 0 writes the metrics
        assert seen["tokenize_rank_world"] == [r, 2]


def test_no_output_file_is_written_by_two_ranks(srun_run):
    work, out, ranks = srun_run
    written = [set(seen["writes"]) for seen in ranks]
    assert not written[0] & written[1], f"written by both ranks: {sorted(written[0] & written[1])}"
    assert all((out / p).exists() for p in ("prior/model.safetensors", "prior.json", "tokens.zarr/zarr.json"))
    # the stage outputs come from rank 0 only (renamed into place as a folder or a file)
    assert {str((out / "prior.json").resolve()), str((out / "prior").resolve()),
            str((out / "tokens.zarr").resolve())} <= written[0]
    assert not any(w.startswith(str((out / "prior").resolve())) for w in written[1])


def test_the_store_built_by_two_srun_tasks_equals_the_reference(srun_run):
    work, out, _ = srun_run
    ref, got = zarr.open_group(str(work / "tokens.zarr"), mode="r"), zarr.open_group(str(out / "tokens.zarr"), mode="r")
    for split in ("train", "test"):
        np.testing.assert_array_equal(got[split]["tokens"][:], ref[split]["tokens"][:])


def test_two_ranks_training_the_prior_read_disjoint_shards_whose_union_is_the_split(srun_run):
    """The ranks trained through fsspec (world size 2 -> the shard stream): every chunk object of the train
    tokens was read by exactly one rank, once, and together they read all 8."""
    work, _, ranks = srun_run
    train = str(work / "tokens.zarr" / "train" / "tokens" / "c") + "/"
    read = [[p for p in seen["train_gets"] if p.startswith(train)] for seen in ranks]
    for r in read:
        assert len(r) == len(set(r)) == 4, r  # each rank: its own 4 whole shards, one request each
    assert not set(read[0]) & set(read[1])
    assert sorted(set(read[0]) | set(read[1])) == sorted(f"{train}{i}/0/0/0" for i in range(8))
