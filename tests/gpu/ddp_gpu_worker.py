"""tests/ddp_worker.py's `modules` runs (VQ-VAE, prior, VQ-VAE without codebook sync) on two CUDA devices:
the same worker, with its trainer params switched to accelerator gpu and bf16-mixed.

    python tests/gpu/ddp_gpu_worker.py <clip store> <out dir> <steps>
"""
import os
import sys
from pathlib import Path

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = os.path.dirname(TESTS)
sys.path.insert(1, TESTS)

import ddp_worker  # noqa: E402
from videogpt.config import TrainerParams  # noqa: E402


def gpu_trainer_params():
    return TrainerParams(accelerator="gpu", devices=2, num_nodes=1, strategy="ddp", precision="bf16-mixed",
                         log_every_n_steps=1)


if __name__ == "__main__":
    ddp_worker.trainer_params = gpu_trainer_params  # fit() looks it up at call time
    ddp_worker.run_modules(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
