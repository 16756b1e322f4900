"""The sample stage's procedure: choose the conditioning, sample, and write viewable outputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import zarr

from videogpt.checkpoint import load_prior, load_vqvae
from videogpt.config import Params
from videogpt.data.clip_store import clips_array, read_labels, read_video_actions, store_attrs
from videogpt.data.ffmpeg_io import write_gif, write_mp4
from videogpt.distributed import inference_device
from videogpt.sampling import sample
from videogpt.video import to_float
from videogpt.visualize import contact_sheet, save_png, video_grid


def gather_conditioning(prior_config, clips_path, indices, split: str = "test", *, n_frames: int | None = None,
                        manifest_path=None) -> dict:
    """The conditioning of generated videos 0..n-1 taken from the real clips `indices` (n,) of a split:
    generated video i <-> real clip indices[i]. Returns the keyword arguments of `sample` the prior needs:
    'label' (n,) the clips' class labels; 'frames' (n, 3, n_cond_frames, H, W) in [-0.5, 0.5], their first
    frames; 'actions' (n, n_frames, A), the actions from their first frame on (n_frames: the generated
    length, default the clip length; longer ones are gathered over the clips of the same video through the
    manifest, see clip_store.read_video_actions). Nothing for an unconditional prior."""
    indices = np.asarray(indices, np.int64)
    cond = {}
    if prior_config.condition == "class":
        labels = read_labels(clips_path, split)[indices]
        bad = sorted(set(indices[(labels < 0) | (labels >= prior_config.n_classes)].tolist()))[:5]
        if bad:
            raise ValueError(f"{clips_path}/{split}: clips {bad} have no label in [0, {prior_config.n_classes}) "
                             "for the class-conditional prior (prior.condition=class)")
        cond["label"] = torch.as_tensor(labels, dtype=torch.long)
    if prior_config.uses_frames:
        clips = clips_array(clips_path, split)
        cond["frames"] = to_float(np.stack([clips[i, :prior_config.n_cond_frames] for i in indices]))
    if prior_config.uses_actions:
        length = n_frames or prior_config.action_shape[0]
        cond["actions"] = torch.from_numpy(read_video_actions(clips_path, manifest_path, split, indices, length))
    return cond


def conditioning_protocol(prior_config, n_frames: int) -> str | None:
    """How the sample stage conditions generated video i (None: unconditional); recorded with the samples and
    in the evaluation's protocol."""
    used = {"class": "the class label", "frames": f"the first {prior_config.n_cond_frames} frame(s)",
            "actions": f"the per-frame actions of {n_frames} frames from its first frame"}
    parts = [text for key, text in used.items() if key in prior_config.condition.split("+")]
    return (f"generated video i is conditioned on {' and '.join(parts)} of real test clip i (the first "
            "n_samples test clips in store order, cycling)") if parts else None


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
    write_gif(tmp / "grid.gif", np.repeat(np.repeat(grid, scale, 1), scale, 2), fps=fps)
    save_png(tmp / "grid.png", contact_sheet(list(videos[:16])), upscale=scale)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def read_samples(out_dir) -> np.ndarray:
    """The videos written by `write_samples`, uint8 (N, T, H, W, 3)."""
    return np.asarray(zarr.open_group(str(Path(out_dir) / "samples.zarr"), mode="r")["videos"][:])


def read_sample_attrs(out_dir) -> dict:
    """What `run_sample_stage` recorded beside the videos (condition, conditioning, sample params, ...)."""
    return dict(zarr.open_group(str(Path(out_dir) / "samples.zarr"), mode="r").attrs)


def run_sample_stage(params: Params, *, prior_dir, vqvae_dir, clips_path, manifest_path, out_dir) -> dict:
    """sample.n_samples videos of sample.n_frames frames (default: the clip length), video i conditioned on
    test clip i (cycling) as `gather_conditioning` takes it."""
    sp = params.sample
    device = inference_device(params.trainer)
    vqvae = load_vqvae(vqvae_dir)
    prior, meta = load_prior(prior_dir, vqvae)
    n_frames = sp.n_frames or prior.config.latent_shape[0] * vqvae.config.downsample[0]
    real_index = np.arange(sp.n_samples) % clips_array(clips_path, "test").shape[0]
    cond = gather_conditioning(prior.config, clips_path, real_index, n_frames=n_frames, manifest_path=manifest_path)
    videos = sample(prior.to(device), vqvae.to(device), sp.n_samples, temperature=sp.temperature,
                    top_k=sp.top_k, top_p=sp.top_p, seed=sp.seed, batch_size=sp.batch_size, progress=True,
                    n_frames=n_frames, window_stride=sp.window_stride, **{k: v.to(device) for k, v in cond.items()})
    fps = store_attrs(clips_path).get("fps") or 8
    attrs = {"sample_params": {k: getattr(sp, k) for k in ("n_samples", "temperature", "top_k", "top_p", "seed",
                                                           "n_frames", "window_stride")},
             "condition": prior.config.condition, "prior_steps": meta.get("steps"), "n_frames": n_frames,
             "conditioning": conditioning_protocol(prior.config, n_frames), "real_index": real_index.tolist(),
             "labels": cond["label"].tolist() if "label" in cond else None}
    write_samples(videos, out_dir, fps=fps, attrs=attrs)
    return {"n": len(videos), "shape": list(videos.shape)}
