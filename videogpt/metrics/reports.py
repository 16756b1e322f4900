"""Reports of the models alone, written by the training stages and by evaluate: a VQ-VAE's reconstruction
NMSE / PSNR / code usage over a split, and a prior's bits per latent token, each with its protocol (which
split, how many clips, what unit), plus the real-above-reconstruction picture.

Separate from videogpt.evaluation (FVD and the evaluate stage) so that the training stages do not depend on
the FVD code: a change there retrains nothing.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from videogpt.prior import Prior
from videogpt.video import to_uint8
from videogpt.visualize import contact_sheet, save_png
from videogpt.vqvae import DATA_VARIANCE, VQVAE


def clip_mse(video: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Per-clip MSE (B,) of (B, 3, T, H, W) videos in [-0.5, 0.5] against their reconstructions (clamped)."""
    return ((recon.clamp(-0.5, 0.5) - video) ** 2).flatten(1).mean(1)


def recon_scores(mse) -> dict:
    """NMSE (mean MSE / DATA_VARIANCE; clips have equal sizes, so this is the pooled MSE) and PSNR on [0,1]
    pixels (per clip, averaged) from per-clip MSEs."""
    mse = np.asarray(mse, np.float64)
    return {"nmse": float(mse.mean()) / DATA_VARIANCE,
            "psnr": float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10))))}


@torch.inference_mode()
def reconstruction_report(vqvae: VQVAE, loader, n_codes: int) -> dict:
    """NMSE (MSE / DATA_VARIANCE), PSNR on [0,1] pixels, code perplexity and fraction of codes used over a split."""
    vqvae.eval()
    mses, counts = [], np.zeros(n_codes, np.int64)
    for video, _ in loader:
        codes = vqvae.encode(video)
        mses.extend(clip_mse(video, vqvae.decode(codes)).tolist())
        counts += np.bincount(codes.flatten().numpy(), minlength=n_codes)
    p = counts / counts.sum()
    return {**recon_scores(mses), "perplexity": float(np.exp(-(p * np.log(p + 1e-10)).sum())),
            "codes_used": float((counts > 0).mean()), "n_clips": len(mses)}


def recon_protocol(n_clips: int, split: str = "test") -> dict:
    """How `reconstruction_report`'s numbers were measured (stored beside them in the metrics files)."""
    return {"split": split, "n": n_clips, "nmse": f"MSE/{DATA_VARIANCE:g} in [-0.5,0.5] space",
            "psnr": "per clip on [0,1] pixels, averaged"}


def bits_protocol(n: int, split: str = "test") -> dict:
    """How `bits_per_dim` was measured: cross-entropy per latent token / ln 2 over n token grids."""
    return {"split": split, "n": n, "unit": "bits per latent token"}


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
