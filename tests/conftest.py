"""Shared test set-up: one torch thread (the machine is small and shared), ffmpeg for making inputs, and
git + DVC copies of the repository for tests that run the real pipeline."""
import os
import subprocess
from pathlib import Path

import pytest
import torch

from dvc_repo import copy_repo
from s3 import _moto_endpoint, s3_bucket, s3_requests  # noqa: F401 (fixtures: a local S3 server)
from videogpt.data.ffmpeg_io import ffmpeg_exe

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """$VIDEOGPT_CACHE in a temp folder for the whole run (and the pipelines it starts): tests never read or
    fill the user's ~/.cache/videogpt."""
    old = os.environ.get("VIDEOGPT_CACHE")
    os.environ["VIDEOGPT_CACHE"] = str(tmp_path_factory.mktemp("videogpt_cache"))
    yield Path(os.environ["VIDEOGPT_CACHE"])
    if old is None:
        os.environ.pop("VIDEOGPT_CACHE")
    else:
        os.environ["VIDEOGPT_CACHE"] = old


@pytest.fixture(scope="session")
def ffmpeg():
    """ffmpeg(*args): run the real ffmpeg quietly (e.g. with lavfi sources) to make test inputs."""
    def run(*args):
        subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", *map(str, args)],
                       check=True, capture_output=True, timeout=60)
    return run


@pytest.fixture(scope="session")
def repo_copy():
    """repo_copy(dst, params) -> env: a git + DVC copy of the working tree at dst with params.yaml sections
    updated from `params`, committed (tests/dvc_repo.py); `env` runs dvc there."""
    return copy_repo
