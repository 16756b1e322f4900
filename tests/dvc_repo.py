"""A git + DVC copy of the working tree with overridden params, for tests that run the real pipeline."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Params of a pipeline that runs end to end in a minute or two on a CPU (4-frame clips: FVD is null)
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
    "classifier": {"width": 4, "n_blocks": 2, "max_steps": 10, "batch_size": 8},
    "trainer": {"accelerator": "cpu", "log_every_n_steps": 2},  # CPU bytes on a GPU host too
}


def run(cmd, cwd, env, timeout=600) -> str:
    """Run cmd under the usual umask 022 (so permission tests see what a user would)."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, umask=0o022)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def copy_repo(dst: Path, overrides: dict) -> dict:
    """Copy the tracked and untracked (not ignored) files to dst, update params.yaml section by section with
    `overrides`, make it a git repo with one commit, and return the environment to run dvc in."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        run(cmd, dst, env)
    return env


def commit(dst: Path, env: dict, message: str) -> None:
    run(["git", "add", "-A"], dst, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], dst, env)


def dvc(dst: Path, env: dict, *args: str, timeout=900) -> str:
    return run([sys.executable, "-m", "dvc", *args], dst, env, timeout=timeout)
