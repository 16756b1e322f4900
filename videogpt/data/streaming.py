"""Training data streamed shard by shard, for stores too large to hold in every rank or to read clip by clip.

Each reader (a DDP rank, or a DataLoader worker within it: `world x num_workers` readers in all) reads only its
own whole shards, in one request each (zarr reads a whole shard of a sharded array, or a whole chunk of an
unsharded one, in one GET), and yields their items shuffled within a bounded buffer, so a rank's memory is the
buffer plus one shard, whatever the size of the split.

Which reader reads which shard is a pure function of (seed, epoch, world size, number of workers): the shards
are permuted by (seed, epoch) and dealt round-robin to the readers, and each reader shuffles with a generator
seeded by (seed, epoch, rank, worker). Same seed and same world size (and workers) -> the same batches.

Every reader yields the same number of items per epoch (the smallest share), so that every DDP rank runs the
same number of steps; the few items beyond it (at most one shard per reader) are left out of that epoch only,
since the next epoch deals the shards anew. A split with fewer shards than readers is cut into equal pieces.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from videogpt.distributed import rank_and_world


def pieces(n: int, shard: int, n_readers: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering [0, n): whole shards, or smaller equal pieces when there are fewer shards
    than readers."""
    if n < n_readers:
        raise ValueError(f"{n} items cannot be shared by {n_readers} readers (ranks x DataLoader workers): "
                         "lower trainer.devices or the loader's num_workers")
    size = max(1, min(shard, n // n_readers))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def fewest_items(n: int, shard: int, n_readers: int) -> int:
    """A lower bound, over all epochs, on the items each reader yields: its share of the pieces, at most one of
    them the short last piece."""
    parts = pieces(n, shard, n_readers)
    size = parts[0][1] - parts[0][0]
    return (len(parts) // n_readers - 1) * size + (parts[-1][1] - parts[-1][0])


def assignment(n: int, shard: int, seed: int, epoch: int, n_readers: int) -> tuple[list[list[tuple[int, int]]], int]:
    """(the pieces of each reader in reading order, the items every reader yields) for one epoch."""
    parts = pieces(n, shard, n_readers)
    order = np.random.default_rng([seed, epoch]).permutation(len(parts))
    mine = [[parts[i] for i in order[r::n_readers]] for r in range(n_readers)]
    return mine, min(sum(b - a for a, b in m) for m in mine)


class ShardStream(IterableDataset):
    """Items of the rows [0, n) of a store, streamed as the module docstring says. A subclass sets `n` and
    `shard` and implements `read(start, stop) -> list of items` (one bulk read of a piece).

    The epoch advances with each pass (`__iter__`), in every worker's copy alike (persistent workers keep their
    copy between epochs; without workers the one copy counts). The rank and world size come from
    torch.distributed when the pass starts (forked workers inherit the process group's state)."""

    n: int
    shard: int

    def __init__(self, seed: int, buffer: int):
        self.seed, self.buffer, self.epoch = seed, buffer, 0
        self._opened, self._pid = None, None

    def read(self, start: int, stop: int) -> list:
        raise NotImplementedError

    def open(self):
        """The store's group to read from (a subclass's), opened once per process: no handle crosses a fork."""
        raise NotImplementedError

    def group(self):
        if self._pid != os.getpid():
            self._opened, self._pid = self.open(), os.getpid()
        return self._opened

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_opened": None, "_pid": None}

    def reader(self) -> tuple[int, int]:
        """(this reader's index, the number of readers)."""
        rank, world = rank_and_world()
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return rank * workers + worker, world * workers

    def __iter__(self) -> Iterator:
        epoch, self.epoch = self.epoch, self.epoch + 1
        me, n_readers = self.reader()
        mine, quota = assignment(self.n, self.shard, self.seed, epoch, n_readers)
        rng = np.random.default_rng([self.seed, epoch, me])
        buf, given = [], 0
        for start, stop in mine[me]:
            buf.extend(self.read(start, stop))
            while len(buf) > self.buffer and given < quota:
                yield self._pop(buf, rng)
                given += 1
        while buf and given < quota:
            yield self._pop(buf, rng)
            given += 1

    @staticmethod
    def _pop(buf: list, rng: np.random.Generator):
        """A uniformly drawn item of the buffer, removed in O(1) (the last item takes its place)."""
        i = int(rng.integers(len(buf)))
        buf[i], buf[-1] = buf[-1], buf[i]
        return buf.pop()
