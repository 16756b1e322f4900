"""The token store: every clip encoded once by the trained VQ-VAE, so the prior never runs the encoder.

Layout (Zarr v3 directory store): `<split>/tokens` (N, t, h, w) in the smallest unsigned dtype that
holds n_codes ((N, t, h, w, C) with C = vqvae.n_codebooks > 1, each value an index into its own codebook), `<split>/labels` (N,) int32, root attributes `vqvae_fingerprint`, `latent_shape`,
`n_codes`, `class_names`. Encoding streams block by block: memory does not depend on N.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset

from videogpt import storage
from videogpt.config import ComputeParams, PriorParams
from videogpt.data.clip_store import (clips_array, read_actions, read_clips, read_labels, store_attrs,
                                      store_location, store_splits)
from videogpt.data.dataset import ClipDataset, shard_rows
from videogpt.data.streaming import ShardStream
from videogpt.distributed import barrier, inference_autocast, rank_and_world, to_device, worker_device
from videogpt.engine import ordered_map
from videogpt.prior import ACTION_CONDITIONS, FRAME_CONDITIONS
from videogpt.progress import progress_bar
from videogpt.video import to_float
from videogpt.vqvae import LATENT_AXES

BLOCK = 1024  # clips per chunk and per unit of work: ranks write disjoint chunks, resume skips whole blocks


def token_dtype(n_codes: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if n_codes - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"vqvae.n_codes: {n_codes} codes do not fit in 32 bits")


class _ClipBatches(Dataset):
    """Clips [start, stop) of a split in batches of uint8 (n, T, H, W, 3), one bulk read each: workers ship
    uint8 (a quarter of float32's bytes) and the conversion to float happens on the device."""

    def __init__(self, clips_path, split: str, start: int, stop: int, batch_size: int):
        self.clips_path, self.split = clips_path, split
        self.bounds = [(a, min(a + batch_size, stop)) for a in range(start, stop, batch_size)]

    def __len__(self):
        return len(self.bounds)

    def __getitem__(self, i):
        start, stop = self.bounds[i]
        try:
            clips = read_clips(self.clips_path, self.split, start, stop)
        except Exception as e:
            raise RuntimeError(f"{self.clips_path}/{self.split}/clips: clips [{start}:{stop}] are unreadable "
                               f"(corrupt or missing shard?): {type(e).__name__}: {e}") from e
        return torch.from_numpy(np.ascontiguousarray(clips))


STORE = "tokens.zarr"  # the store's name inside a storage prefix


class _BlockEncoder:
    """(split, start, stop) -> the codes of those clips, (n, *latent) int64: one block of the token store. Called
    here or, pickled with its VQ-VAE, on a Ray worker, which then picks its own device (device None)."""

    def __init__(self, vqvae, clips: str, batch_size: int, precision: str, device, num_workers: int,
                 progress: bool):
        self.vqvae, self.clips, self.batch_size, self.precision = vqvae, clips, batch_size, precision
        self.device, self.num_workers, self.progress = device, num_workers, progress

    @torch.inference_mode()
    def __call__(self, block: tuple[str, int, int]) -> np.ndarray:
        split, start, stop = block
        self.device = worker_device(self.device)
        vqvae = self.vqvae.to(self.device)
        loader = DataLoader(_ClipBatches(self.clips, split, start, stop, self.batch_size), batch_size=None,
                            num_workers=self.num_workers)
        with inference_autocast(self.device, self.precision):
            codes = [vqvae.encode(to_float(to_device(clips, self.device))).cpu() for clips in
                     progress_bar(loader, desc=f"tokenize {split} [{start}:{stop}]", disable=not self.progress,
                                  unit="batch")]
        return torch.cat(codes).numpy()


def _create(work: str, store: str, clips_path, vqvae, run_key: dict) -> None:
    """A new, empty store at `store` (a location), the block markers' folder and the run key under `work`."""
    storage.remove(work)
    fs, path = storage.filesystem(work)
    root = zarr.open_group(storage.zarr_store(store), mode="w")
    for split in store_splits(clips_path):
        n, *clip_shape = clips_array(clips_path, split).shape
        latent = vqvae.latent_shape(tuple(clip_shape[:3]))
        group = root.create_group(split)
        group.create_array("tokens", shape=(n, *latent), dtype=token_dtype(vqvae.config.n_codes),
                           chunks=(BLOCK, *latent), dimension_names=("clip", *LATENT_AXES[:len(latent)]))
        group.create_array("labels", data=np.asarray(read_labels(clips_path, split), np.int32))
    fs.makedirs(storage.join(path, "done"), exist_ok=True)
    fs.pipe_file(storage.join(path, "run_key.json"), json.dumps(run_key, sort_keys=True).encode())


@torch.inference_mode()
def build_token_store(vqvae, clips_path: str | Path, out_path: str | Path, *, fingerprint: str,
                      batch_size: int = 64, num_workers: int = 0, device: str | torch.device = "cpu",
                      precision: str = "32", progress: bool = True, root: str | None = None,
                      compute: ComputeParams | None = None) -> dict:
    """Encode every clip of every split into `out_path`.

    The store is built at `<out>.tmp` and renamed at the end, so an interrupted run never leaves a
    complete-looking store. With `root` (storage.root: a local folder or an fsspec URL) it is built at
    <root>/tokens/<key>/tokens.zarr instead (key: the content hash of the clips, the VQ-VAE and the settings;
    see videogpt.storage), completed by _COMPLETE.json, and out_path becomes the pointer file to it; a
    complete prefix with the same key is reused without encoding anything. Work goes in blocks of BLOCK
    clips (one chunk each); a marker file per finished block lets a rerun with the same VQ-VAE skip what is
    done, and under torch.distributed block i goes to rank i % world_size, so ranks write disjoint regions of
    the array. The encoder runs on
    `device` at `precision` (tokenize.precision: "32" or "bf16" autocast; the code search stays float32), or,
    under compute.engine: ray, on compute.workers Ray workers (a GPU each where compute.gpus_per_worker says),
    the blocks' codes coming back here to be written in order: the same bytes either way.
    """
    rank, world = rank_and_world()
    out_path = Path(out_path)
    vqvae = vqvae.eval()
    clip_attrs = store_attrs(clips_path)
    run_key = {"vqvae": fingerprint, "batch_size": batch_size, "precision": precision,
               "clips": clip_attrs.get("counts")}
    if root is None:
        work = store = str(out_path.with_name(out_path.name + ".tmp"))
    else:
        code = [hashlib.sha256(Path(f).read_bytes()).hexdigest()
                for f in (__file__, inspect.getsourcefile(type(vqvae)))]
        key = storage.content_hash({"run": run_key, "code": code, "zarr": zarr.__version__,
                                    "clips": storage.read_pointer(clips_path)["hash"]
                                    if storage.is_pointer(clips_path) else storage.resolve(clips_path)})
        work = storage.stage_prefix(root, "tokens", key)
        store = storage.join(work, STORE)
        if storage.is_complete(work):  # these clips were encoded by this model already
            if rank == 0:
                storage.write_pointer(out_path, work, storage.read_marker(work))
            barrier()
            return storage.read_marker(work)["counts"]
    fs, work_path = storage.filesystem(work)
    key_file = storage.join(work_path, "run_key.json")
    resumable = fs.exists(key_file) and json.loads(fs.cat_file(key_file)) == json.loads(json.dumps(run_key))
    if rank == 0 and not resumable:
        _create(work, store, clips_path, vqvae, run_key)
    barrier()
    root_group = zarr.open_group(storage.zarr_store(store), mode="r+")
    counts, blocks, skipped = {}, [], 0
    for split in store_splits(clips_path):
        n = counts[split] = root_group[split]["tokens"].shape[0]
        for block, start in enumerate(range(0, n, BLOCK)):
            marker = storage.join(work_path, "done", f"{split}-{block}")
            if block % world != rank:
                continue
            if fs.exists(marker):
                skipped += 1
                continue
            blocks.append((split, start, min(start + BLOCK, n), marker))
    on_ray = compute is not None and compute.engine == "ray"
    encoder = _BlockEncoder(vqvae, store_location(clips_path), batch_size,
                            precision, None if on_ray else device, 0 if on_ray else num_workers,
                            progress and not on_ray)
    # The encoder runs here or on Ray workers; this process writes every block's codes, in order.
    codes = ordered_map(encoder, [block[:3] for block in blocks], compute, gpus=True)
    for (split, start, stop, marker), block_codes in progress_bar(zip(blocks, codes), total=len(blocks),
                                                                    desc="tokenize", unit="block",
                                                                    disable=not (progress and on_ray)):
        tokens = root_group[split]["tokens"]
        tokens[start:stop] = block_codes.astype(tokens.dtype)
        fs.touch(marker)
    if skipped:
        print(f"tokenize: resumed, {skipped} finished block(s) skipped", flush=True)
    barrier()
    if rank == 0:
        root_group.attrs.update({"vqvae_fingerprint": fingerprint, "latent_shape": list(vqvae.latent_shape()),
                                 "n_codes": vqvae.config.n_codes,
                                 "class_names": list(clip_attrs.get("class_names", [])), "counts": counts})
        fs.rm(storage.join(work_path, "done"), recursive=True)
        fs.rm(key_file)
        if root is None:
            if out_path.is_dir():
                shutil.rmtree(out_path)
            out_path.unlink(missing_ok=True)  # a pointer file, from a run with storage.root
            Path(work).rename(out_path)
        else:
            storage.write_pointer(out_path, work, storage.write_marker(work, key=key, counts=counts))
    barrier()
    return counts


def open_token_store(path: str | Path, *, expect_fingerprint: str | None = None):
    """The token store's root group, read-only: a local store, a pointer file (storage.root set) or a URL."""
    root = zarr.open_group(storage.zarr_store(storage.resolve(path, STORE), read_only=True), mode="r")
    if expect_fingerprint is not None and root.attrs.get("vqvae_fingerprint") != expect_fingerprint:
        raise ValueError(
            f"{path}: the token store was made by a different VQ-VAE (fingerprint "
            f"{root.attrs.get('vqvae_fingerprint', '?')[:12]} != {expect_fingerprint[:12]} of the configured model); "
            "re-run the tokenize stage (dvc repro)")
    return root


class TokenDataset(Dataset):
    """Token grids of one split (held in memory: they are small), plus label, conditioning frames and actions.

    Items are dicts: `tokens` (t,h,w) long ((t,h,w,C) over C codebooks), `label` () long when `with_label`, `frames`
    (3, n_cond_frames, H, W) float in [-0.5, 0.5] when `n_cond_frames` > 0, read from the
    clip store at the same index (the token store keeps clip order), `actions` (T, A) float32 when
    `with_actions` (held in memory; every clip must have them, see clip_store.read_actions).
    """

    def __init__(self, tokens_path, split: str, *, with_label: bool = False, n_cond_frames: int = 0,
                 with_actions: bool = False, clips_path=None):
        root = open_token_store(tokens_path)
        self.tokens = np.asarray(root[split]["tokens"][:])
        self.labels = np.asarray(root[split]["labels"][:], np.int64)
        self.with_label = with_label
        self.n_cond_frames = n_cond_frames
        self.clips = ClipDataset(clips_path, split) if n_cond_frames else None
        self.actions = read_actions(clips_path, split) if with_actions else None
        for what, n in (("clips", self.clips), ("clips with actions", self.actions)):
            if n is not None and len(n) != len(self.tokens):
                raise ValueError(f"{tokens_path}: {len(self.tokens)} token grids but {len(n)} {what} in "
                                 f"{clips_path} ({split}); re-run tokenize")

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        frames = self.clips[i][0][:, :self.n_cond_frames] if self.n_cond_frames else None
        return token_item(self.tokens[i], self.labels[i] if self.with_label else None, frames,
                          None if self.actions is None else self.actions[i])

    def code_counts(self, n_codes: int) -> np.ndarray:
        """(n_codes,) int64: how often each code occurs in the split."""
        return np.bincount(self.tokens.reshape(-1).astype(np.int64), minlength=n_codes)


def token_item(tokens, label, frames, actions) -> dict:
    """One item of TokenDataset / TokenShards: the keys whose value is not None (see TokenDataset)."""
    item = {"tokens": torch.from_numpy(tokens.astype(np.int64))}
    if label is not None:
        item["label"] = torch.tensor(np.int64(label))
    if frames is not None:
        item["frames"] = frames
    if actions is not None:
        item["actions"] = torch.from_numpy(actions)
    return item


class TokenShards(ShardStream):
    """TokenDataset's items, streamed by whole chunks (BLOCK grids, one object each) as
    videogpt.data.streaming says: a rank holds one chunk plus the shuffle buffer (default two chunks' grids),
    not the split. Conditioning frames are read for each chunk's rows in one bulk read of the clip store;
    actions (small, T x A floats per clip) are held whole, as in TokenDataset."""

    def __init__(self, tokens_path, split: str, *, seed: int, with_label: bool = False, n_cond_frames: int = 0,
                 with_actions: bool = False, clips_path=None, buffer: int | None = None):
        self.tokens_path, self.split, self.clips_path = str(tokens_path), split, clips_path
        self.with_label, self.n_cond_frames = with_label, n_cond_frames
        super().__init__(seed, buffer=0)
        tokens = self.group()["tokens"]
        self.n, self.shard = tokens.shape[0], shard_rows(tokens)
        self.buffer = buffer or 2 * self.shard
        self.actions = read_actions(clips_path, split) if with_actions else None

    def open(self) -> dict:
        group = zarr.open_group(self.tokens_path, mode="r")[self.split]
        return {"tokens": group["tokens"], "labels": group["labels"]}

    def read(self, start: int, stop: int) -> list:
        group = self.group()
        tokens = group["tokens"][start:stop]
        labels = group["labels"][start:stop] if self.with_label else [None] * len(tokens)
        frames = [None] * len(tokens)
        if self.n_cond_frames:
            clips = clips_array(self.clips_path, self.split)[start:stop, :self.n_cond_frames]
            frames = [to_float(c) for c in clips]
        actions = [None] * len(tokens) if self.actions is None else self.actions[start:stop]
        return [token_item(*row) for row in zip(tokens, labels, frames, actions)]

    def code_counts(self, n_codes: int) -> np.ndarray:
        """As TokenDataset.code_counts, read chunk by chunk."""
        tokens = self.group()["tokens"]
        return sum((np.bincount(tokens[a:a + self.shard].reshape(-1).astype(np.int64), minlength=n_codes)
                    for a in range(0, self.n, self.shard)), np.zeros(n_codes, np.int64))


def prior_dataset(prior: PriorParams, tokens_path, clips_path, split: str,
                  stream_seed: int | None = None) -> TokenDataset | TokenShards:
    """The token grids of a split with what the `prior:` params condition on (labels, first frames, actions):
    held in memory, or streamed by chunks (TokenShards) in the order `stream_seed` fixes when it is given."""
    kwargs = dict(with_label=prior.condition == "class",
                  n_cond_frames=prior.n_cond_frames if prior.condition in FRAME_CONDITIONS else 0,
                  with_actions=prior.condition in ACTION_CONDITIONS, clips_path=clips_path)
    if stream_seed is not None:
        return TokenShards(tokens_path, split, seed=stream_seed, **kwargs)
    return TokenDataset(tokens_path, split, **kwargs)
