"""The clip store as a torch Dataset (the store itself, and plain uint8 access, are videogpt/data/clip_store.py)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import zarr
from torch.utils.data import Dataset

from videogpt.data.clip_store import clips_array, open_split, read_labels
from videogpt.data.streaming import ShardStream
from videogpt.video import to_float


def clip_item(clip, label, hflip: bool, uint8: bool) -> tuple[torch.Tensor, int]:
    """A stored uint8 (T, H, W, 3) clip as a training item (ClipDataset's docstring), flipped left-right with
    probability 1/2 (torch's RNG) when hflip."""
    video = torch.as_tensor(clip) if uint8 else to_float(clip)
    if hflip and torch.rand(()) < 0.5:
        video = video.flip(-2 if uint8 else -1)  # the W axis
    return video, int(label)


def shard_rows(array: zarr.Array) -> int:
    """Rows per stored object of a Zarr array: its shard (one object of many chunks), else its chunk."""
    return (array.shards or array.chunks)[0]


class ClipDataset(Dataset):
    """Clips of one split as (float (3, T, H, W) in [-0.5, 0.5], int label); label -1 = unlabeled. With
    uint8=True the clip comes as stored, uint8 (T, H, W, 3), for a consumer that converts it on its own device
    (videogpt.video.to_float): a quarter of the bytes through worker processes, pinned memory and the copy.

    The Zarr array is opened lazily, once per process, so the dataset can be handed to DataLoader
    workers (fork or spawn) without sharing a handle. `hflip` flips half the clips left-right, drawing
    from torch's RNG so that seeded workers (Lightning's seed_everything(workers=True)) repeat the flips.
    """

    def __init__(self, store_path: str | Path, split: str, hflip: bool = False, uint8: bool = False):
        self.store_path = Path(store_path)
        self.split = split
        self.hflip = hflip
        self.uint8 = uint8
        self.labels = read_labels(store_path, split)  # small: one int per clip
        self._clips = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_clips": None, "_pid": None}

    def _array(self) -> zarr.Array:
        if self._pid != os.getpid():
            self._clips = clips_array(self.store_path, self.split)
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
        return clip_item(clip, self.labels[index], self.hflip, self.uint8)


class ClipShards(ShardStream):
    """ClipDataset's items, streamed by whole shards (videogpt.data.streaming): each DDP rank and DataLoader
    worker reads only its own shards, one bulk read each, and holds one shard plus the shuffle buffer (default
    two shards' clips). `seed` fixes the order; hflip draws from torch's RNG as in ClipDataset."""

    def __init__(self, store_path, split: str, *, seed: int, hflip: bool = False, uint8: bool = False,
                 buffer: int | None = None):
        self.store_path, self.split, self.hflip, self.uint8 = store_path, split, hflip, uint8
        super().__init__(seed, buffer=0)
        clips = self.group()["clips"]
        self.n, self.shard = clips.shape[0], shard_rows(clips)
        self.buffer = buffer or 2 * self.shard

    def open(self) -> dict:
        group = open_split(self.store_path, self.split)
        return {"clips": group["clips"], "labels": group["labels"]}

    def read(self, start: int, stop: int) -> list:
        clips, labels = self.group()["clips"][start:stop], self.group()["labels"][start:stop]
        return [clip_item(c, label, self.hflip, self.uint8) for c, label in zip(clips, labels)]
