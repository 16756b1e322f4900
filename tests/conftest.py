"""Shared test set-up: one torch thread (the machine is small and shared), ffmpeg for making inputs, and
git + DVC copies of the repository for tests that run the real pipeline."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from videogpt.data.ffmpeg_io import ffmpeg_exe

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ffmpeg():
    """ffmpeg(*args): run the real ffmpeg quietly (e.g. with lavfi sources) to make test inputs."""
    def run(*args):
        subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", *map(str, args)],
                       check=True, capture_output=True, timeout=60)
    return run


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_copy():
    """repo_copy(dst, params) -> env: a git + DVC copy of the working tree (tracked and untracked files,
    not ignored ones) at dst, params.yaml sections updated from `params`, committed; `env` runs dvc there."""
    def copy(dst: Path, params: dict) -> dict:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                               capture_output=True).stdout.decode().split("\0")
        for f in filter(None, files):
            if (ROOT / f).is_file():
                (dst / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, dst / f)
        values = yaml.safe_load((dst / "params.yaml").read_text())
        for section, overrides in params.items():
            values[section].update(overrides)
        (dst / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        env = dict(os.environ, DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1",
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
            subprocess.run(cmd, cwd=dst, env=env, check=True, capture_output=True)
        return env
    return copy
