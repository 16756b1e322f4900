"""Shared test set-up: one torch thread (the machine is small and shared) and ffmpeg for making inputs."""
import subprocess

import pytest
import torch

from videogpt.data.ffmpeg_io import ffmpeg_exe

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ffmpeg():
    """ffmpeg(*args): run the real ffmpeg quietly (e.g. with lavfi sources) to make test inputs."""
    def run(*args):
        subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", *map(str, args)],
                       check=True, capture_output=True, timeout=60)
    return run
