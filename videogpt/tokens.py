"""The token store: every clip encoded once by the trained VQ-VAE, so the prior never runs the encoder.

Layout (Zarr v3 directory store): `<split>/tokens` (N, t, h, w) in the smallest unsigned dtype that
holds n_codes, `<split>/labels` (N,) int32, root attributes `vqvae_fingerprint`, `latent_shape`,
`n_codes`, `class_names`. Encoding streams batch by batch: memory does not depend on N.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from videogpt.data.dataset import ClipDataset

SPLITS = ("train", "test")
TOKENS_PER_CHUNK = 1024  # clips per chunk: token grids are small, large chunks keep the file count low


def token_dtype(n_codes: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if n_codes - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"vqvae.n_codes: {n_codes} codes do not fit in 32 bits")


def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


@torch.inference_mode()
def build_token_store(vqvae, clips_path: str | Path, out_path: str | Path, *, fingerprint: str,
                      batch_size: int = 64, num_workers: int = 0, device: str | torch.device = "cpu",
                      progress: bool = True) -> dict:
    """Encode every clip of every split into `out_path`; written to a temp path and renamed at the end."""
    out_path = Path(out_path)
    vqvae = vqvae.to(device).eval()
    clips = zarr.open_group(str(clips_path), mode="r")
    tmp = tmp_path(out_path)
    if tmp.exists():
        shutil.rmtree(tmp)
    root = zarr.open_group(str(tmp), mode="w")
    counts = {}
    for split in SPLITS:
        if split not in clips:
            continue
        ds = ClipDataset(clips_path, split)
        n = len(ds)
        t, h, w = vqvae.latent_shape(tuple(clips[split]["clips"].shape[1:4]))
        group = root.create_group(split)
        tokens = group.create_array("tokens", shape=(n, t, h, w), dtype=token_dtype(vqvae.config.n_codes),
                                    chunks=(min(TOKENS_PER_CHUNK, max(n, 1)), t, h, w),
                                    dimension_names=("clip", "t", "h", "w"))
        group.create_array("labels", data=np.asarray(clips[split]["labels"][:], np.int32))
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        start = 0
        for video, _ in tqdm(loader, desc=f"tokenize {split}", disable=not progress, unit="batch"):
            codes = vqvae.encode(video.to(device))
            tokens[start:start + len(codes)] = codes.cpu().numpy().astype(tokens.dtype)
            start += len(codes)
        counts[split] = n
    root.attrs.update({"vqvae_fingerprint": fingerprint, "latent_shape": list(vqvae.latent_shape()),
                       "n_codes": vqvae.config.n_codes,
                       "class_names": list(clips.attrs.get("class_names", [])), "counts": counts})
    if out_path.exists():
        shutil.rmtree(out_path)
    tmp.rename(out_path)
    return counts


def open_token_store(path: str | Path, *, expect_fingerprint: str | None = None):
    root = zarr.open_group(str(path), mode="r")
    if expect_fingerprint is not None and root.attrs.get("vqvae_fingerprint") != expect_fingerprint:
        raise ValueError(
            f"{path}: the token store was made by a different VQ-VAE (fingerprint "
            f"{root.attrs.get('vqvae_fingerprint', '?')[:12]} != {expect_fingerprint[:12]} of the configured model); "
            "re-run the tokenize stage (dvc repro)")
    return root


class TokenDataset(Dataset):
    """Token grids of one split (held in memory: they are small), plus label and conditioning frames.

    Items are dicts: `tokens` (t,h,w) long, `label` () long when `with_label`, `frames`
    (3, n_cond_frames, H, W) float in [-0.5, 0.5] when `n_cond_frames` > 0, read from the
    clip store at the same index (the token store keeps clip order).
    """

    def __init__(self, tokens_path, split: str, *, with_label: bool = False, n_cond_frames: int = 0,
                 clips_path=None):
        root = zarr.open_group(str(tokens_path), mode="r")
        self.tokens = np.asarray(root[split]["tokens"][:])
        self.labels = np.asarray(root[split]["labels"][:], np.int64)
        self.with_label = with_label
        self.n_cond_frames = n_cond_frames
        self.clips = ClipDataset(clips_path, split) if n_cond_frames else None
        if self.clips is not None and len(self.clips) != len(self.tokens):
            raise ValueError(f"{tokens_path}: {len(self.tokens)} token grids but {len(self.clips)} clips in "
                             f"{clips_path} ({split}); re-run tokenize")

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        item = {"tokens": torch.from_numpy(self.tokens[i].astype(np.int64))}
        if self.with_label:
            item["label"] = torch.tensor(self.labels[i])
        if self.n_cond_frames:
            video, _ = self.clips[i]
            item["frames"] = video[:, :self.n_cond_frames]
        return item
