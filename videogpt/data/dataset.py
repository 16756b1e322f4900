"""Reading the clip store: a torch Dataset for training and plain uint8 access for the other stages."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset


def open_store(store_path: str | Path) -> zarr.Group:
    """The store's root group, read-only; a missing store says how to build it."""
    if not (Path(store_path) / "zarr.json").is_file():
        raise FileNotFoundError(f"{store_path}: clip store not found; build it with `dvc repro preprocess`")
    return zarr.open_group(store_path, mode="r")


def open_split(store_path: str | Path, split: str) -> zarr.Group:
    """The group <store>/<split> holding `clips` (N, T, H, W, 3) uint8 and `labels` (N,) int32."""
    root = open_store(store_path)
    if split not in root.group_keys():
        raise KeyError(f"{store_path}: no split '{split}'; available: {', '.join(sorted(root.group_keys()))}")
    return root[split]


def store_attrs(store_path: str | Path) -> dict:
    """Root attributes: class_names, resolution, sequence_length, frame_stride, params, counts."""
    return dict(open_store(store_path).attrs)


def read_clips(store_path: str | Path, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Clips [start, stop) of a split as uint8 (n, T, H, W, 3); one bulk read, fast for whole shards."""
    return open_split(store_path, split)["clips"][start:stop]


class ClipDataset(Dataset):
    """Clips of one split as (float (3, T, H, W) in [-0.5, 0.5], int label); label -1 = unlabeled.

    The Zarr array is opened lazily, once per process, so the dataset can be handed to DataLoader
    workers (fork or spawn) without sharing a handle. `hflip` flips half the clips left-right, drawing
    from torch's RNG so that seeded workers (Lightning's seed_everything(workers=True)) repeat the flips.
    """

    def __init__(self, store_path: str | Path, split: str, hflip: bool = False):
        self.store_path = Path(store_path)
        self.split = split
        self.hflip = hflip
        self.labels = open_split(store_path, split)["labels"][:]  # small: one int per clip
        self._clips = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_clips": None, "_pid": None}

    def _array(self) -> zarr.Array:
        if self._pid != os.getpid():
            self._clips = open_split(self.store_path, self.split)["clips"]
            self._pid = os.getpid()
        return self._clips

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"clip {index} out of range: {self.split} has {len(self)} clips")
        try:
            clip = self._array()[index]
        except Exception as e:
            raise RuntimeError(f"{self.store_path}/{self.split}/clips: clip {index} is unreadable "
                               f"(corrupt or missing shard?): {type(e).__name__}: {e}") from e
        video = torch.from_numpy(clip).permute(3, 0, 1, 2).float().div_(255).sub_(0.5)
        if self.hflip and torch.rand(()) < 0.5:
            video = video.flip(-1)
        return video, int(self.labels[index])
