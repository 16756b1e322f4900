"""ClipDataset over a real clip store: values and range, labels, DataLoader workers, flips, broken stores."""
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from videogpt.config import DataParams
from videogpt.data.clip_store import read_clips, store_attrs
from videogpt.data.dataset import ClipDataset
from videogpt.data.ffmpeg_io import write_mp4
from videogpt.data.clip_store import build_clip_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """12 train clips of a square moving right (so flips are visible), labels from two class folders."""
    src = tmp_path_factory.mktemp("src")
    frames = np.zeros((12, 16, 16, 3), np.uint8)
    for t in range(12):
        frames[t, 4:10, t:t + 4] = (255, 128, 0)
    for split, n in (("train", 4), ("test", 1)):
        for i in range(n):
            write_mp4(src / split / ("even" if i % 2 == 0 else "odd") / f"{i}.mp4", frames, fps=8)
    out = src.parent / "clips.zarr"
    params = DataParams(source=str(src), resolution=16, sequence_length=4, num_workers=1)
    build_clip_store(params, out, src.parent / "manifest.csv", src.parent / "rejected.csv", progress=False)
    return out


def test_items_are_float_cthw_in_half_range_with_int_labels(store):
    ds = ClipDataset(store, "train")
    assert len(ds) == 12
    video, label = ds[5]
    assert video.shape == (3, 4, 16, 16) and video.dtype == torch.float32
    assert -0.5 <= video.min() and video.max() <= 0.5
    raw = read_clips(store, "train", 5, 6)[0]
    torch.testing.assert_close(video, torch.from_numpy(raw).permute(3, 0, 1, 2).float() / 255 - 0.5)
    assert [ds[i][1] for i in range(0, 12, 3)] == [0, 0, 1, 1] and isinstance(label, int)  # sorted paths
    assert store_attrs(store)["class_names"] == ["even", "odd"]


def test_dataloader_workers_return_the_same_data(store):
    ds = ClipDataset(store, "train")
    ds[0]  # open in the parent first: workers must not reuse its handle

    def everything(loader):
        videos, labels = zip(*loader)
        return torch.cat(videos), torch.cat(labels)

    serial = everything(DataLoader(ds, batch_size=5))
    parallel = everything(DataLoader(ds, batch_size=5, num_workers=2))
    assert torch.equal(serial[0], parallel[0]) and torch.equal(serial[1], parallel[1])


def test_hflip_is_seeded_by_torch(store):
    ds = ClipDataset(store, "train", hflip=True)
    plain = ClipDataset(store, "train")[0][0]

    def draw():
        return [ds[0][0] for _ in range(16)]

    torch.manual_seed(0)
    first = draw()
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(first, draw()))
    flipped = [torch.equal(v, plain.flip(-1)) for v in first]
    assert any(flipped) and not all(flipped)
    assert all(f or torch.equal(v, plain) for f, v in zip(flipped, first))


def test_pickled_dataset_reopens_the_store(store):
    ds = ClipDataset(store, "test")
    before = ds[1][0]
    torch.testing.assert_close(pickle.loads(pickle.dumps(ds))[1][0], before)


def test_corrupt_shard_names_the_clip(store, tmp_path):
    broken = tmp_path / "broken.zarr"
    shutil.copytree(store, broken)
    shard = broken / "train/clips/c/0/0/0/0/0"
    shard.write_bytes(np.random.default_rng(0).bytes(shard.stat().st_size))
    with pytest.raises(RuntimeError, match="clip 3 is unreadable"):
        ClipDataset(broken, "train")[3]


def test_missing_store_or_split_says_what_to_do(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro preprocess"):
        ClipDataset(tmp_path / "nothing.zarr", "train")
    with pytest.raises(KeyError, match="no split 'val'; available: test, train"):
        ClipDataset(store, "val")
