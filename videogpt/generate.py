"""The sample stage's procedure: the FVD sets (eval.n_generated videos per trial, each conditioned on a real
test clip of the trial), and viewable outputs of the first few."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr

from videogpt.checkpoint import load_prior, load_vqvae
from videogpt.config import Params
from videogpt.data.clip_store import read_clips_at, read_labels, read_video_actions, store_attrs
from videogpt.data.ffmpeg_io import write_gif, write_mp4
from videogpt.distributed import inference_device, worker_device
from videogpt.engine import ordered_map
from videogpt.progress import progress_bar
from videogpt.sampling import latent_frames, sample_tokens, sample_tokens_sliding, tokens_to_videos
from videogpt.video import to_float
from videogpt.visualize import contact_sheet, save_png, upscale, video_grid
from videogpt.vqvae import LATENT_AXES


def gather_conditioning(prior_config, clips_path, indices, split: str = "test", *, n_frames: int | None = None,
                        manifest_path=None) -> dict:
    """The conditioning of generated videos 0..n-1 taken from the real clips `indices` (n,) of a split:
    generated video i <-> real clip indices[i], the paper's BAIR protocol. Returns the keyword arguments of
    the samplers the prior needs: 'label' (n,) the clips' class labels; 'frames' (n, 3, n_cond_frames, H, W)
    in [-0.5, 0.5], their first frames; 'actions' (n, n_frames, A), the actions from their first frame on
    (n_frames: the generated length, default the clip length; longer ones are gathered over the clips of the
    same video through the manifest, see clip_store.read_video_actions). Nothing for an unconditional prior.
    Each kind of conditioning adds its own entry, read from the same clips."""
    indices = np.asarray(indices, np.int64)
    kinds = set(prior_config.condition.split("+"))  # "frames+actions" -> {"frames", "actions"}
    cond = {}
    if "class" in kinds:
        labels = read_labels(clips_path, split)[indices]
        bad = sorted(set(indices[(labels < 0) | (labels >= prior_config.n_classes)].tolist()))[:5]
        if bad:
            raise ValueError(f"{clips_path}/{split}: clips {bad} have no label in [0, {prior_config.n_classes}) "
                             "for the class-conditional prior (prior.condition=class)")
        cond["label"] = torch.as_tensor(labels, dtype=torch.long)
    if "frames" in kinds:
        cond["frames"] = to_float(read_clips_at(clips_path, split, indices, n_frames=prior_config.n_cond_frames))
    if "actions" in kinds:
        length = n_frames or prior_config.action_shape[0]
        cond["actions"] = torch.from_numpy(read_video_actions(clips_path, manifest_path, split, indices, length))
    return cond


def conditioning_protocol(prior_config, n_frames: int) -> str | None:
    """How the sample stage conditions generated video i (None: unconditional); recorded with the samples and
    in the evaluation's protocol."""
    used = {"class": "the class label", "frames": f"the first {prior_config.n_cond_frames} frame(s)",
            "actions": f"the per-frame actions of {n_frames} frames from its first frame"}
    parts = [text for key, text in used.items() if key in prior_config.condition.split("+")]
    return (f"generated video j of a trial is conditioned on {' and '.join(parts)} of test clip generated[t][j] "
            "of cache/i3d_real_stats/indices.json (the trial's real clip j mod n_real)") if parts else None


def write_samples(out_dir, tokens: np.ndarray, videos: np.ndarray, *, n_show: int, fps: float,
                  arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """samples/ atomically: samples.zarr (tokens (N,t,h,w) or (N,t,h,w,C), videos (N,T,H,W,3) uint8, per-video `arrays`,
    attrs), and for people the first n_show videos as mp4/sample_XXXX.mp4, grid.gif (<= 64) and grid.png
    (<= 16)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    root = zarr.open_group(str(tmp / "samples.zarr"), mode="w")
    root.create_array("tokens", data=tokens, chunks=(min(len(tokens), 256),) + tokens.shape[1:],
                      dimension_names=("sample", *LATENT_AXES[:tokens.ndim - 1]))
    root.create_array("videos", data=videos, chunks=(1,) + videos.shape[1:],
                      dimension_names=("sample", "t", "h", "w", "c"))
    for name, values in arrays.items():
        root.create_array(name, data=values, dimension_names=("sample",))
    root.attrs.update(attrs)
    shown = videos[:n_show]
    for i, video in enumerate(shown):
        write_mp4(tmp / "mp4" / f"sample_{i:04d}.mp4", video, fps=fps)
    grid = video_grid(shown[:64])
    scale = max(1, 256 // grid.shape[1])
    write_gif(tmp / "grid.gif", upscale(grid, scale), fps=fps)
    save_png(tmp / "grid.png", contact_sheet(list(shown[:16])), upscale=scale)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


@dataclass(frozen=True)
class GeneratedSets:
    """What `write_samples` stored for evaluation: tokens (N, t, h, w), read lazily; real_index (N,), the
    real test clip each video was generated for (trial-major); attrs (condition, sample params, ...)."""
    tokens: zarr.Array
    real_index: np.ndarray
    attrs: dict


def read_samples(out_dir) -> GeneratedSets:
    """The generated sets written by the sample stage (samples/samples.zarr)."""
    root = zarr.open_group(str(Path(out_dir) / "samples.zarr"), mode="r")
    real_index = np.asarray(root["real_index"][:]) if "real_index" in root else np.zeros(0, np.int64)
    return GeneratedSets(tokens=root["tokens"], real_index=real_index, attrs=dict(root.attrs))


PART_BATCHES = 4  # under compute.engine: ray, sample.batch_size x this many videos per unit of work


class _PartSampler:
    """(first, n, conditioning of its videos) -> (tokens, uint8 videos, prior seconds, decode seconds) of videos
    first..first + n - 1 of the set, drawn with their own randomness (sampling.sample_tokens' `first`): here on `device`, or
    pickled with both models onto a Ray worker, which picks its own device (device None)."""

    def __init__(self, prior, vqvae, n_latent: int, window: int, window_stride, kw: dict, device):
        self.prior, self.vqvae, self.n_latent, self.window, self.kw = prior, vqvae, n_latent, window, kw
        self.window_stride, self.device = window_stride, device

    def __call__(self, part: tuple[int, int, dict]):
        first, n, cond = part
        device = worker_device(self.device)
        prior, vqvae = self.prior.to(device), self.vqvae.to(device)
        kw = self.kw | {k: v.to(device) for k, v in cond.items()}
        t0 = time.perf_counter()
        if self.n_latent == self.window:
            tokens = sample_tokens(prior, n, first=first, **kw)
        else:
            tokens = sample_tokens_sliding(prior, n, self.n_latent, window_stride=self.window_stride, vqvae=vqvae,
                                           first=first, **kw)
        t1 = time.perf_counter()
        videos = tokens_to_videos(vqvae, tokens, batch_size=self.kw["batch_size"], window=self.window)
        return tokens, videos, t1 - t0, time.perf_counter() - t1


def run_sample_stage(params: Params, *, prior_dir, vqvae_dir, clips_path, manifest_path, indices_path,
                     out_dir) -> dict:
    """Generate the FVD sets: for each trial of indices_path (drawn by fvd_real_stats), eval.n_generated
    videos, video j conditioned on the test clip generated[t][j] (the trial's real clip j mod n_real);
    trial-major, so video t * n_generated + j <-> generated[t][j].
    Sample i's randomness depends only on (sample.seed, i), so adding trials keeps the earlier trials' videos.
    Videos have sample.n_frames frames (default: the clip length); longer ones come from the sliding-window
    sampler (`sampling.sample_tokens_sliding`) and are decoded in blended windows."""
    sp = params.sample
    # per trial, the test clip each generated video is conditioned on (eval.n_generated of them; drawn by
    # fvd_real_stats from the named FVD protocol, videogpt.evaluation.draw_real_sets)
    trials = [np.asarray(t, np.int64) for t in json.loads(Path(indices_path).read_text())["generated"]]
    real_index = np.concatenate(trials)
    trial = np.repeat(np.arange(len(trials)), [len(t) for t in trials])
    device = inference_device(params.trainer)
    vqvae = load_vqvae(vqvae_dir)
    prior, meta = load_prior(prior_dir, vqvae)
    window, time_factor = prior.config.latent_shape[0], vqvae.config.downsample[0]
    n_frames = sp.n_frames or window * time_factor
    n_latent = latent_frames(n_frames, window, time_factor)
    cond = gather_conditioning(prior.config, clips_path, real_index, n_frames=n_frames, manifest_path=manifest_path)
    on_ray = params.compute.engine == "ray"
    kw = dict(temperature=sp.temperature, top_k=sp.top_k, top_p=sp.top_p, seed=sp.seed, batch_size=sp.batch_size,
              progress=not on_ray, compile=sp.compile, dtype=sp.dtype, kv_dtype=sp.kv_dtype)
    sampler = _PartSampler(prior, vqvae, n_latent, window, sp.window_stride, kw, None if on_ray else device)
    n = len(real_index)
    part = n if not on_ray else sp.batch_size * PART_BATCHES  # whole batches: the same batches either way
    parts = [(a, min(part, n - a), {k: v[a:a + part] for k, v in cond.items()}) for a in range(0, n, part)]
    results = list(progress_bar(ordered_map(sampler, parts, params.compute, gpus=True), total=len(parts),
                                desc="sample", unit="part", disable=not on_ray))
    tokens = torch.cat([r[0] for r in results])
    videos = np.concatenate([r[1] for r in results])
    t1 = time.perf_counter()
    prior_s, decode_s = sum(r[2] for r in results), sum(r[3] for r in results)
    fps = store_attrs(clips_path).get("fps") or 8
    attrs = {"sample_params": {k: getattr(sp, k) for k in ("temperature", "top_k", "top_p", "seed", "n_frames",
                                                           "window_stride")},
             "condition": prior.config.condition, "prior_steps": meta.get("steps"), "n_trials": len(trials),
             "n_frames": n_frames, "conditioning": conditioning_protocol(prior.config, n_frames),
             "labels": cond["label"].tolist() if "label" in cond else None}
    if prior.config.uses_frames:
        attrs["n_cond_frames"] = prior.config.n_cond_frames
        attrs["conditioning_frames_in_videos"] = (
            "included, as generated: the prior samples the latents of the conditioning frames too and every "
            "frame is decoded from sampled tokens (the real frames are not copied in), as in VideoGPT")
    write_samples(out_dir, tokens.numpy(), videos, n_show=min(sp.n_samples, len(videos)), fps=fps,
                  arrays={"real_index": real_index, "trial": trial}, attrs=attrs)
    print(f"sample: time split: prior steps {prior_s:.1f} s, decode to pixels {decode_s:.1f} s"
          + (" (summed over the workers)" if on_ray else "") + f", writing zarr/MP4/GIF "
          f"{time.perf_counter() - t1:.1f} s", flush=True)
    return {"n": len(videos), "n_trials": len(trials), "shape": list(videos.shape)}
