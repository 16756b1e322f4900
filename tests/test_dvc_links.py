"""Inputs checked out by DVC as links: with `cache.type` symlink every tracked video is a link into the DVC
cache, with hardlink (or reflink) a read-only file sharing the cache's inode. Preprocess takes both, and still
rejects symlinks that lead anywhere else."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from videogpt.config import parse
from videogpt.data.clip_store import build_clip_store
from videogpt.data.ffmpeg_io import write_mp4
from videogpt.data.moving_digits import write_moving_digits
from videogpt.data.sources import OUTSIDE_ROOT


def dvc(*args, cwd, env=None):
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def video(path: Path, seed: int) -> Path:
    write_mp4(path, np.random.default_rng(seed).integers(0, 256, (4, 16, 16, 3), np.uint8), fps=8)
    return path


def test_links_into_this_repositorys_dvc_cache_are_inputs_and_others_are_not(tmp_path):
    repo, other = tmp_path / "repo", tmp_path / "other"
    for r in (repo, other):
        r.mkdir()
        dvc("init", "--no-scm", "-q", cwd=r)
    dvc("config", "cache.dir", "../shared/cache", cwd=repo)  # a cache outside the repository, relative path
    ours = video(tmp_path / "shared/cache/files/md5/3f/0a1b", 1)  # where DVC keeps an object
    theirs = video(other / ".dvc/cache/files/md5/77/aa00", 2)      # another repository's cache
    elsewhere = video(tmp_path / "elsewhere/secret.mp4", 3)
    src = repo / "videos"
    video(src / "train/a/plain.mp4", 4)
    video(src / "test/b.mp4", 5)
    (src / "train/a/cached.mp4").symlink_to(ours)
    (src / "train/a/theirs.mp4").symlink_to(theirs)
    (src / "train/a/escape.mp4").symlink_to(elsewhere)
    out = tmp_path / "out"
    build_clip_store(parse({"data": {"source": str(src), "resolution": 8, "sequence_length": 4,
                                     "num_workers": 1}}).data,
                     out / "clips.zarr", out / "manifest.csv", out / "rejected.csv", progress=False)
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert sorted(manifest["source"]) == ["test/b.mp4", "train/a/cached.mp4", "train/a/plain.mp4"]
    rejected = pd.read_csv(out / "rejected.csv", keep_default_na=False)
    assert rejected[["source", "reason", "detail"]].values.tolist() == [
        ["train/a/escape.mp4", OUTSIDE_ROOT, f"links to {elsewhere.resolve()}"],
        ["train/a/theirs.mp4", OUTSIDE_ROOT, f"links to {theirs.resolve()}"]]


TINY = {
    "default_data": {"n_train": 4, "n_test": 2, "resolution": 32, "n_frames": 8, "digit_size": 14},
    "data": {"source": "videos", "resolution": 16, "sequence_length": 4, "num_workers": 2},
    "vqvae": {"n_hiddens": 16, "res_hiddens": 8, "n_res_layers": 1, "downsample": [2, 4, 4], "n_codes": 16,
              "embedding_dim": 8, "max_steps": 4, "batch_size": 4, "checkpoint_every": 2, "val_every": 2},
    "tokenize": {"batch_size": 8},
    "prior": {"n_layer": 1, "n_head": 2, "n_embd": 16, "max_steps": 4, "warmup_steps": 0, "batch_size": 4,
              "checkpoint_every": 2, "val_every": 2},
    "sample": {"n_samples": 2, "batch_size": 2},
    "eval": {"n_real": 4, "batch_size": 2},
    "trainer": {"accelerator": "cpu", "log_every_n_steps": 2},  # CPU bytes on a GPU host too
}


@pytest.mark.slow
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_pipeline_runs_on_videos_checked_out_as_cache_links(link, tmp_path, repo_copy):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = repo_copy(repo, TINY)
    videos = repo / "videos"
    write_moving_digits(videos, parse({"default_data": TINY["default_data"] | {"n_train": 8, "n_test": 4}})
                        .default_data)
    shutil.copy(videos / "train/1/00001.mp4", videos / "train/1/again.mp4")  # same bytes: one cache object
    dvc("config", "cache.type", link, cwd=repo, env=env)
    dvc("add", "videos", cwd=repo, env=env)
    dvc("checkout", "--relink", "videos.dvc", cwd=repo, env=env)
    files = sorted(p for p in videos.rglob("*.mp4"))
    cache = (repo / ".dvc/cache").resolve()
    if link == "symlink":
        assert all(f.is_symlink() and f.resolve().is_relative_to(cache) for f in files)
    else:  # a hardlink is a plain, read-only file sharing its inode with the cache object (and its duplicate)
        assert not any(f.is_symlink() for f in files) and all(f.stat().st_nlink >= 2 for f in files)
        assert (videos / "train/1/again.mp4").stat().st_ino == (videos / "train/1/00001.mp4").stat().st_ino
        assert not any(f.stat().st_mode & 0o222 for f in files)

    out = dvc("repro", cwd=repo, env=env)
    assert "Running stage 'evaluate'" in out
    manifest = pd.read_csv(repo / "data/manifest.csv", keep_default_na=False)
    expected = sorted(f.relative_to(videos).as_posix() for f in files)
    assert sorted(set(manifest["source"])) == expected  # paths under data.source, never cache paths
    assert pd.read_csv(repo / "data/rejected.csv").empty
    assert "up to date" in dvc("status", cwd=repo, env=env)
