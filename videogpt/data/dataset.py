"""The clip store as a torch Dataset (the store itself, and plain uint8 access, are videogpt/data/clip_store.py)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import zarr
from torch.utils.data import Dataset

from videogpt.data.clip_store import clips_array, read_labels
from videogpt.video import to_float


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
        video = torch.as_tensor(clip) if self.uint8 else to_float(clip)
        if self.hflip and torch.rand(()) < 0.5:
            video = video.flip(-2 if self.uint8 else -1)  # the W axis
        return video, int(self.labels[index])
