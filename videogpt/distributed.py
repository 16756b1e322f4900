"""Where the non-training stages run: the inference device, how inputs get there and at what precision, and
the ranks of a torchrun / srun launch.

Training goes through Lightning's strategies; tokenize, sample and evaluate use these helpers: without a
process group everything degrades to rank 0 of 1 (the I3D statistics and evaluate spread their work with
compute.engine: ray, videogpt.engine, not over ranks). Every inference input reaches its device through
`to_device` (uint8 clips travel as uint8 and are converted on the device), so a test can record where
tensors went by replacing that one function.
"""
from __future__ import annotations

import os
import torch


def inference_device(trainer_params) -> torch.device:
    """The device for the non-training stages (tokenize, sample, evaluate): the first GPU if allowed."""
    use_cuda = trainer_params.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def worker_device(device: torch.device | None) -> torch.device:
    """`device` when the caller chose one; None on a Ray worker: the GPU Ray gave it, if any, else the CPU."""
    return device if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_device(x: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """x on `device` (a no-op where it already is): the one door of every inference input."""
    return x.to(device, non_blocking=True)


def inference_autocast(device: str | torch.device, precision: str):
    """The context of tokenize, I3D and bits/dim inference at `tokenize.precision` / `eval.precision`: bf16
    autocast for "bf16", nothing for "32". What must stay exact opts out itself: the codebook's nearest-code
    search (VQVAE.encode disables autocast), the losses (computed from float32 logits) and the Frechet
    distance (float64 NumPy, outside any model)."""
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _srun_launched() -> bool:
    """Whether srun started this process, by the rule of Lightning's SLURMEnvironment.detect (SLURM_NTASKS set, job
    not named "bash" or "interactive"), so that these helpers and the training stages' Trainer agree."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def launch_env() -> tuple[int, int, int]:
    """(global rank, world size, local rank) as the launcher set them, before any process group exists.

    srun: SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (checked first, as Lightning does: its SLURMEnvironment is
    what the training stages' Trainer uses under srun). torchrun: RANK / WORLD_SIZE / LOCAL_RANK. Otherwise 0, 1, 0.
    """
    if _srun_launched():
        return (int(os.environ.get("SLURM_PROCID", "0")), int(os.environ["SLURM_NTASKS"]),
                int(os.environ.get("SLURM_LOCALID", "0")))
    if "WORLD_SIZE" in os.environ:
        return (int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", "0")))
    return 0, 1, 0


def launched_as_rank_zero() -> bool:
    """Whether this process is global rank 0, read from the launcher's environment before any process group
    exists: srun's SLURM_PROCID (launch_env), torchrun's RANK, and the LOCAL_RANK / NODE_RANK of the processes
    Lightning's own launcher starts (they have no RANK)."""
    if launch_env()[0] != 0:
        return False
    return _srun_launched() or all(int(os.environ.get(k, "0")) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def init_from_env() -> None:
    """Join the process group when launched by torchrun or srun with more than one process.

    Under srun the rendezvous address and port are the ones Lightning's SLURMEnvironment picks (MASTER_ADDR /
    MASTER_PORT when set, else the first host of SLURM_NODELIST and a port derived from SLURM_JOB_ID), so the
    non-training stages and the training stages meet the same way.
    """
    rank, world, local_rank = launch_env()
    if world <= 1 or torch.distributed.is_initialized():
        return
    if _srun_launched():
        from lightning_fabric.plugins.environments import SLURMEnvironment
        env = SLURMEnvironment()  # refuses --ntasks without --ntasks-per-node, as the Trainer would
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = env.main_address, str(env.main_port)
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo", init_method="env://",
                                         rank=rank, world_size=world)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)


def rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    if rank_and_world()[1] > 1:
        torch.distributed.barrier()
