"""Training loaders that stream whole shards (videogpt.data.streaming): each reader (rank x DataLoader worker)
reads only its own shards, one request each, shuffled in a bounded buffer; same seed and world size -> same
batches; memory does not grow with the split. Requests are counted through an fsspec filesystem over local files
(tests/counting_fs.py), as they would be sent to a bucket."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

from videogpt.data.streaming import assignment, fewest_items, pieces
from videogpt.tokens import TokenDataset, TokenShards

pytest.importorskip("fsspec")
import counting_fs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GRID = (2, 4, 4)


def write_token_store(path: Path, n: int, chunk: int, grid=GRID) -> None:
    """A token store in the contract layout whose labels are the row indices, so each item names its row."""
    rng = np.random.default_rng(0)
    root = zarr.open_group(str(path), mode="w")
    g = root.create_group("train")
    g.create_array("tokens", data=rng.integers(0, 16, (n, *grid), dtype=np.uint8), chunks=(chunk, *grid))
    g.create_array("labels", data=np.arange(n, dtype=np.int32), chunks=(chunk,))


def epoch_rows(ds, batch_size=4, num_workers=0, epochs=1) -> list[list[int]]:
    """The row indices (labels) of every batch, epoch after epoch."""
    dl = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, drop_last=True,
                    persistent_workers=num_workers > 0)
    return [[b["label"].tolist() for b in dl] for _ in range(epochs)]


def test_readers_get_disjoint_pieces_that_cover_the_split():
    n, shard = 100, 8  # 13 shards, the last one short
    for readers in (1, 2, 4, 6):
        mine, quota = assignment(n, shard, seed=3, epoch=0, n_readers=readers)
        rows = [r for m in mine for a, b in m for r in range(a, b)]
        assert sorted(rows) == list(range(n))  # disjoint, and their union is the split
        assert all(b - a == shard for m in mine for a, b in m if b != n)  # whole shards
        assert quota == min(sum(b - a for a, b in m) for m in mine) >= n // readers - shard
    again, _ = assignment(n, shard, seed=3, epoch=0, n_readers=4)
    assert again == assignment(n, shard, seed=3, epoch=0, n_readers=4)[0]
    assert again != assignment(n, shard, seed=3, epoch=1, n_readers=4)[0]  # each epoch deals anew
    assert again != assignment(n, shard, seed=4, epoch=0, n_readers=4)[0]
    for n, shard, readers in ((100, 8, 3), (96, 8, 4), (10, 8, 4), (1000, 64, 6), (33, 1, 2)):
        fewest = min(assignment(n, shard, s, e, readers)[1] for s in range(3) for e in range(20))
        assert fewest_items(n, shard, readers) <= fewest  # a true lower bound
    # fewer shards than readers: equal smaller pieces, still a partition
    assert pieces(10, 8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    with pytest.raises(ValueError, match="3 items cannot be shared by 4 readers"):
        pieces(3, 8, 4)


def test_one_reader_yields_every_item_once_equal_to_the_in_memory_dataset(tmp_path):
    write_token_store(tmp_path / "t.zarr", 40, 8)
    stream = TokenShards(tmp_path / "t.zarr", "train", seed=0, with_label=True)
    items = list(stream)
    assert sorted(int(it["label"]) for it in items) == list(range(40))
    assert [int(it["label"]) for it in items] != list(range(40))  # shuffled
    ref = TokenDataset(tmp_path / "t.zarr", "train", with_label=True)
    for it in items:
        want = ref[int(it["label"])]
        assert it.keys() == want.keys()
        for k in it:
            assert it[k].dtype == want[k].dtype and torch.equal(it[k], want[k])
    counts = TokenShards(tmp_path / "t.zarr", "train", seed=0).code_counts(16)
    np.testing.assert_array_equal(counts, ref.code_counts(16))


def test_same_seed_gives_the_same_batches_and_workers_read_disjoint_shards(tmp_path):
    write_token_store(tmp_path / "t.zarr", 96, 8)

    def run(seed):
        return epoch_rows(TokenShards(tmp_path / "t.zarr", "train", seed=seed, with_label=True), num_workers=2,
                          epochs=2)

    first = run(5)
    assert first == run(5)
    assert first != run(6)
    assert first[0] != first[1]  # the epochs differ
    for epoch in first:
        rows = [r for batch in epoch for r in batch]
        assert len(rows) == len(set(rows)) == 96  # every row once: 12 shards, 6 per worker
        # a DataLoader takes batches from its workers in turn: even batches from worker 0, odd from worker 1
        shards = [{r // 8 for batch in epoch[w::2] for r in batch} for w in (0, 1)]
        assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 6


def test_an_epoch_costs_one_request_per_shard(tmp_path):
    counting_fs.register()
    n_shards = 16
    write_token_store(tmp_path / "t.zarr", 8 * n_shards, 8)
    counting_fs.GETS.clear()
    stream = TokenShards(counting_fs.url(tmp_path / "t.zarr"), "train", seed=0, with_label=True)
    rows = [r for batch in epoch_rows(stream)[0] for r in batch]
    assert sorted(rows) == list(range(8 * n_shards))
    token_gets = [p for p in counting_fs.GETS if "/train/tokens/c/" in p]
    assert sorted(token_gets) == sorted(set(token_gets)) and len(token_gets) == n_shards  # each shard once
    # all requests (token and label chunks, and a few metadata documents when the store is opened)
    assert len(counting_fs.GETS) <= 2 * n_shards + 8, counting_fs.GETS


RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from torch.utils.data import DataLoader
    from videogpt.tokens import TokenDataset, TokenShards
    torch.set_num_threads(1)
    path, kind = sys.argv[1], sys.argv[2]

    def status(key):  # kB
        return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])

    open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current RSS (Linux >= 4.0)
    before = status("VmRSS:")
    ds = (TokenShards(path, "train", seed=0, with_label=True) if kind == "stream"
          else TokenDataset(path, "train", with_label=True))
    n = sum(len(b["tokens"]) for b in DataLoader(ds, batch_size=64, shuffle=kind != "stream"))
    print(json.dumps({"n": n, "growth_kib": status("VmHWM:") - before}))
""")


def peak_growth_mib(path: Path, kind: str) -> tuple[int, float]:
    # one malloc arena: the zarr reader threads' arenas otherwise add ~10 MiB of noise to the peak
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(path), kind], capture_output=True, text=True,
                         cwd=REPO, timeout=300, env={"OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["n"], got["growth_kib"] / 1024


def test_peak_memory_does_not_grow_with_the_split(tmp_path):
    """One epoch of the stream over a split of 16 MiB of token grids and over one 8x as large: the peak RSS of
    the process (VmHWM, reset after the imports; median of 3 runs each, since one run's peak varies by ~10 MiB with
    the allocator) grows by less than 16 MiB more for the larger split (a chunk is 0.5 MiB, the buffer two chunks;
    measured here: medians 6-8 MiB apart, the rest being the DataLoader's and zarr's own working memory). The
    in-memory TokenDataset, the control, grows by about the 112 MiB the larger split adds (measured 114)."""
    grid = (4, 32, 32)  # 4 KiB per grid (uint8)
    small, large = tmp_path / "small.zarr", tmp_path / "large.zarr"
    write_token_store(small, 4096, 128, grid)
    write_token_store(large, 8 * 4096, 128, grid)

    def median_growth(path, mode):
        runs = [peak_growth_mib(path, mode) for _ in range(3)]
        return runs[0][0], sorted(growth for _, growth in runs)[1]

    n_small, stream_small = median_growth(small, "stream")
    n_large, stream_large = median_growth(large, "stream")
    assert (n_small, n_large) == (4096, 8 * 4096)
    assert stream_large - stream_small < 16, (stream_small, stream_large)
    _, held_small = peak_growth_mib(small, "memory")
    _, held_large = peak_growth_mib(large, "memory")
    assert held_large - held_small > 100, (held_small, held_large)


def test_clip_stream_yields_every_stored_clip_once_flipped_as_drawn(tmp_path):
    """ClipShards over a sharded clip store (8 clips per shard): one reader yields each clip once, as ClipDataset
    stores it or flipped left-right (hflip), and the same torch seed gives the same items."""
    from videogpt.data.dataset import ClipDataset, ClipShards
    rng = np.random.default_rng(1)
    root = zarr.open_group(str(tmp_path / "clips.zarr"), mode="w")
    g = root.create_group("train")
    g.create_array("clips", data=rng.integers(0, 256, (40, 2, 4, 4, 3), dtype=np.uint8), chunks=(1, 2, 4, 4, 3),
                   shards=(8, 2, 4, 4, 3))
    g.create_array("labels", data=np.arange(40, dtype=np.int32))
    ref = ClipDataset(tmp_path / "clips.zarr", "train", uint8=True)

    def run():
        torch.manual_seed(0)
        return list(ClipShards(tmp_path / "clips.zarr", "train", seed=0, hflip=True, uint8=True))

    items = run()
    assert sorted(label for _, label in items) == list(range(40))
    flipped = 0
    for video, label in items:
        want = ref[label][0]
        flipped += not torch.equal(video, want)
        assert torch.equal(video, want) or torch.equal(video, want.flip(-2))
    assert 5 < flipped < 35  # about half
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(items, run()))


def test_a_batch_larger_than_a_readers_share_is_refused_naming_the_key(tmp_path):
    """Under DDP every reader (rank x worker) must get at least a batch each epoch, else no rank would step."""
    from videogpt.config import ParamsError, TrainerParams
    from videogpt.training import _check_size
    write_token_store(tmp_path / "t.zarr", 64, 8)  # 8 shards: 2 per reader for 2 ranks x 2 workers
    stream = TokenShards(tmp_path / "t.zarr", "train", seed=0)
    _check_size(stream, TrainerParams(devices=2), 16, 2, "prior.batch_size", "training token grids")
    with pytest.raises(ParamsError, match="prior.batch_size: 17 exceeds the 16 training token grids that each of "
                                          "the 4 readers"):
        _check_size(stream, TrainerParams(devices=2), 17, 2, "prior.batch_size", "training token grids")
