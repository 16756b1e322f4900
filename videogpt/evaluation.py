"""How good the models are: the reports of the training stages (reconstruction NMSE / PSNR / code usage,
bits/dim) and the evaluate stage's procedures (real-set I3D statistics, FVD / R-FVD / FVD*).

Every number is written beside its protocol (which clips, how many, frames, resolution, resize,
weights sha256), because FVD from different protocols is not comparable. Without I3D weights
the FVD entries are null with the reason; nothing else stands in for them.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from videogpt.checkpoint import load_prior, load_vqvae
from videogpt.config import Params
from videogpt.data.clip_store import clip_reader, clips_array
from videogpt.data.dataset import ClipDataset
from videogpt.distributed import inference_device, rank_and_world, sharded_map
from videogpt.fileio import file_sha256
from videogpt.generate import read_sample_attrs, read_samples
from videogpt.metrics.frechet import frechet_distance, gaussian_stats, load_stats, save_stats
from videogpt.metrics.i3d import FEATURE_PROTOCOL, MIN_FRAMES, i3d_features, load_i3d
from videogpt.prior import Prior
from videogpt.tokens import open_token_store, prior_dataset
from videogpt.video import to_float, to_uint8
from videogpt.visualize import contact_sheet, save_png
from videogpt.vqvae import DATA_VARIANCE, VQVAE

STATS_FILE, PROTOCOL_FILE = "stats.npz", "protocol.json"


# --------------------------------------------------------------------------------------------
# Reports of the models alone (the training stages write them too)


@torch.inference_mode()
def reconstruction_report(vqvae: VQVAE, loader, n_codes: int) -> dict:
    """NMSE (MSE / DATA_VARIANCE), PSNR on [0,1] pixels, code perplexity and fraction of codes used over a split."""
    vqvae.eval()
    se, n_px, psnrs, counts = 0.0, 0, [], np.zeros(n_codes, np.int64)
    for video, _ in loader:
        codes = vqvae.encode(video)
        recon = vqvae.decode(codes).clamp(-0.5, 0.5)
        se += float(((recon - video) ** 2).sum())
        n_px += video.numel()
        mse = ((recon - video) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        psnrs.extend((10 * torch.log10(1.0 / mse)).tolist())
        counts += np.bincount(codes.flatten().numpy(), minlength=n_codes)
    p = counts / counts.sum()
    return {"nmse": se / n_px / DATA_VARIANCE, "psnr": float(np.mean(psnrs)),
            "perplexity": float(np.exp(-(p * np.log(p + 1e-10)).sum())),
            "codes_used": float((counts > 0).mean()), "n_clips": len(psnrs)}


@torch.inference_mode()
def save_reconstruction_picture(vqvae: VQVAE, dataset, path, n: int = 6) -> None:
    """Real (odd rows) above reconstruction (even rows) for n clips spread evenly over the split."""
    rows = []
    for i in np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).round().astype(int):
        video = dataset[int(i)][0][None]
        rows += [to_uint8(video[0]).numpy(), to_uint8(vqvae.decode(vqvae.encode(video))[0]).numpy()]
    save_png(path, contact_sheet(rows), upscale=2)


def unigram_entropy_bits(tokens: np.ndarray, n_codes: int) -> float:
    p = np.bincount(tokens.reshape(-1).astype(np.int64), minlength=n_codes) / tokens.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())



@torch.inference_mode()
def bits_per_dim(prior: Prior, loader) -> float:
    prior.eval()
    total, n = 0.0, 0
    for batch in loader:
        loss = prior.loss(batch["tokens"], label=batch.get("label"), frames=batch.get("frames"),
                          actions=batch.get("actions"))
        total += float(loss) * len(batch["tokens"])
        n += len(batch["tokens"])
    return total / max(n, 1) / math.log(2)


# --------------------------------------------------------------------------------------------
# FVD and the evaluate stage


def real_protocol(params: Params, clips_path) -> dict:
    """What defines the real-set statistics; the cache is valid only for an identical protocol."""
    test = clips_array(clips_path, "test")
    weights = params.eval.i3d_weights
    return {"split": "test", "selection": "first n_real clips in store order",
            "n_real": int(min(params.eval.n_real, test.shape[0])), "frames": int(test.shape[1]),
            "resolution": int(test.shape[2]), **FEATURE_PROTOCOL, "weights": weights, "weights_sha256": file_sha256(weights) if weights and Path(weights).is_file() else None}


def fvd_unavailable_reason(params: Params, protocol: dict) -> str | None:
    """Why FVD cannot be computed here (no weights, too few frames), or None."""
    if protocol["frames"] < MIN_FRAMES:
        return (f"clips have {protocol['frames']} frames (data.sequence_length); the I3D network needs at least "
                f"{MIN_FRAMES}")
    w = params.eval.i3d_weights
    if w is None:
        return ("no I3D weights: eval.i3d_weights is null (fetch them with `python -m videogpt.download i3d` "
                "and set the path)")
    if not Path(w).is_file():
        return f"no I3D weights: eval.i3d_weights file '{w}' does not exist"
    return None


def i3d_stats(model, load, n: int, batch_size: int, device) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian statistics of I3D features of items [0, n); batches shared across ranks under torchrun."""
    feats = sharded_map(lambda videos: i3d_features(model, videos, batch_size=batch_size, device=device),
                        n, batch_size, load)
    return gaussian_stats(feats)


def compute_real_stats(params: Params, *, clips_path, out_dir) -> dict:
    """Stage fvd_real_stats: I3D statistics of the real test clips, cached as a DVC out."""
    protocol = real_protocol(params, clips_path)
    reason = fvd_unavailable_reason(params, protocol)
    info = {"protocol": protocol, "available": reason is None, "reason": reason}
    stats = None
    if reason is None:
        device = inference_device(params.trainer)
        model = load_i3d(params.eval.i3d_weights).to(device)
        stats = i3d_stats(model, clip_reader(clips_path, "test"), protocol["n_real"], params.eval.batch_size, device)
    if rank_and_world()[0] != 0:  # every rank holds the same statistics; rank 0 publishes them
        return info
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if stats is not None:
        save_stats(tmp / STATS_FILE, *stats, protocol=protocol, n=protocol["n_real"])
    (tmp / PROTOCOL_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return info


def load_real_stats(stats_dir, protocol: dict):
    """((mu, sigma), None) from the cache, or (None, reason) when FVD is unavailable."""
    info = json.loads((Path(stats_dir) / PROTOCOL_FILE).read_text())
    if not info["available"]:
        return None, info["reason"]
    mu, sigma, _ = load_stats(Path(stats_dir) / STATS_FILE, protocol)  # raises if the protocol changed
    return (mu, sigma), None


@torch.inference_mode()
def reconstructions_uint8(vqvae, videos_uint8: np.ndarray, batch_size: int, device) -> np.ndarray:
    out = []
    for i in range(0, len(videos_uint8), batch_size):
        x = to_float(videos_uint8[i:i + batch_size])
        recon = vqvae.decode(vqvae.encode(x.to(device))).cpu()
        out.extend(to_uint8(r).numpy() for r in recon)
    return np.stack(out)


def evaluate(params: Params, *, clips_path, tokens_path, vqvae_dir, prior_dir, samples_dir, stats_dir) -> dict:
    device = inference_device(params.trainer)
    ep = params.eval
    protocol = real_protocol(params, clips_path)
    vqvae = load_vqvae(vqvae_dir).to(device)
    prior, _ = load_prior(prior_dir, vqvae)
    open_token_store(tokens_path)

    test = ClipDataset(clips_path, "test")
    subset = Subset(test, range(protocol["n_real"]))
    recon = reconstruction_report(vqvae.cpu(), DataLoader(subset, batch_size=ep.batch_size), vqvae.config.n_codes)
    vqvae.to(device)
    test_tokens = prior_dataset(params.prior, tokens_path, clips_path, "test")
    bpd = bits_per_dim(prior, DataLoader(test_tokens, batch_size=ep.batch_size))

    samples = read_samples(samples_dir)
    fvd_protocol = protocol | {"n_generated": int(len(samples)), "generated_frames": int(samples.shape[1]),
                               "conditioning": read_sample_attrs(samples_dir).get("conditioning")}
    # Long samples (sample.n_frames) are not compared with clips of another length.
    length_reason = None if samples.shape[1] == protocol["frames"] else (
        f"the samples have {samples.shape[1]} frames (sample.n_frames), the real clips {protocol['frames']}: "
        "FVD compares videos of one length")
    real_stats, reason = load_real_stats(stats_dir, protocol)
    fvd = r_fvd = fvd_star = None
    if real_stats is not None:
        model = load_i3d(ep.i3d_weights).to(device)
        real = clip_reader(clips_path, "test")
        recon_stats = i3d_stats(model, lambda a, b: reconstructions_uint8(vqvae, real(a, b), ep.batch_size, device),
                                protocol["n_real"], ep.batch_size, device)
        r_fvd = frechet_distance(*recon_stats, *real_stats)
        if length_reason is None:
            sample_stats = i3d_stats(model, lambda a, b: samples[a:b], len(samples), ep.batch_size, device)
            fvd = frechet_distance(*sample_stats, *real_stats)
            fvd_star = frechet_distance(*sample_stats, *recon_stats)

    def entry(value, what, why_not=None):
        return {"value": value, "reason": (reason or why_not) if value is None else None, "what": what,
                "protocol": fvd_protocol}

    report = {
        "fvd": entry(fvd, "FD(I3D(samples), I3D(real test clips))", length_reason),
        "r_fvd": entry(r_fvd, "FD(I3D(VQ-VAE reconstructions), I3D(real test clips))"),
        "fvd_star": entry(fvd_star, "FD(I3D(samples), I3D(VQ-VAE reconstructions))", length_reason),
        "recon": {"nmse": recon["nmse"], "psnr": recon["psnr"], "codes_used": recon["codes_used"],
                  "protocol": {"split": "test", "n": recon["n_clips"], "nmse": f"MSE/{DATA_VARIANCE:g} in [-0.5,0.5] space",
                               "psnr": "per clip on [0,1] pixels, averaged"}},
        "test_bits_per_dim": {"value": bpd, "protocol": {"split": "test", "n": len(test_tokens),
                                                         "unit": "bits per latent token"}},
    }
    return report
