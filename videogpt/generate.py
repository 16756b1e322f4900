"""The sample stage's procedure: choose the conditioning, sample, and write viewable outputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import zarr

from videogpt.checkpoint import load_prior, load_vqvae
from videogpt.config import Params
from videogpt.data.clip_store import store_attrs
from videogpt.data.dataset import ClipDataset
from videogpt.data.ffmpeg_io import write_gif, write_mp4
from videogpt.distributed import inference_device
from videogpt.sampling import sample
from videogpt.visualize import contact_sheet, save_png, upscale, video_grid


def conditioning(prior_config, n: int, clips_path) -> dict:
    """Class labels cycle over the classes; frames are the first frames of the first n test clips."""
    if prior_config.condition == "class":
        return {"label": torch.arange(n) % prior_config.n_classes}
    if prior_config.condition == "frames":
        test = ClipDataset(clips_path, "test")
        idx = [i % len(test) for i in range(n)]
        frames = torch.stack([test[i][0][:, :prior_config.n_cond_frames] for i in idx])
        return {"frames": frames}
    return {}


def write_samples(videos: np.ndarray, out_dir, *, fps: float, attrs: dict) -> None:
    """samples.zarr (N,T,H,W,3) uint8, mp4/sample_XXXX.mp4, grid.gif and grid.png; atomically."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    root = zarr.open_group(str(tmp / "samples.zarr"), mode="w")
    root.create_array("videos", data=videos, chunks=(1,) + videos.shape[1:],
                      dimension_names=("sample", "t", "h", "w", "c"))
    root.attrs.update(attrs)
    for i, video in enumerate(videos):
        write_mp4(tmp / "mp4" / f"sample_{i:04d}.mp4", video, fps=fps)
    grid = video_grid(videos[:64])
    scale = max(1, 256 // grid.shape[1])
    write_gif(tmp / "grid.gif", upscale(grid, scale), fps=fps)
    save_png(tmp / "grid.png", contact_sheet(list(videos[:16])), upscale=scale)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def read_samples(out_dir) -> np.ndarray:
    """The videos written by `write_samples`, uint8 (N, T, H, W, 3)."""
    return np.asarray(zarr.open_group(str(Path(out_dir) / "samples.zarr"), mode="r")["videos"][:])


def run_sample_stage(params: Params, *, prior_dir, vqvae_dir, clips_path, out_dir) -> dict:
    sp = params.sample
    device = inference_device(params.trainer)
    vqvae = load_vqvae(vqvae_dir)
    prior, meta = load_prior(prior_dir, vqvae)
    cond = conditioning(prior.config, sp.n_samples, clips_path)
    videos = sample(prior.to(device), vqvae.to(device), sp.n_samples, temperature=sp.temperature,
                    top_k=sp.top_k, top_p=sp.top_p, seed=sp.seed, batch_size=sp.batch_size, progress=True,
                    **{k: v.to(device) for k, v in cond.items()})
    fps = store_attrs(clips_path).get("fps") or 8
    attrs = {"sample_params": {k: getattr(sp, k) for k in ("n_samples", "temperature", "top_k", "top_p", "seed")},
             "condition": prior.config.condition, "prior_steps": meta.get("steps"),
             "labels": cond["label"].tolist() if "label" in cond else None}
    write_samples(videos, out_dir, fps=fps, attrs=attrs)
    return {"n": len(videos), "shape": list(videos.shape)}
