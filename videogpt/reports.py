"""Reports of the models alone, written by the training stages and by evaluate: a VQ-VAE's reconstruction
NMSE / PSNR / code usage over a split, and a prior's bits per latent token, each with its protocol (which
split, how many clips, what unit), plus the real-above-reconstruction picture.

Separate from videogpt.evaluation (FVD and the evaluate stage) so that the training stages do not depend on
the FVD code: a change there retrains nothing.

The reports run on the model's device. Under torch.distributed (e.g. right after a DDP training) the ranks
share the work: batch i of the loader goes to rank i % world_size, and the per-batch results are gathered and
combined in batch order, so every rank returns exactly the numbers one rank alone would compute.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from videogpt.distributed import rank_and_world, to_device
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


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def my_batches(loader: DataLoader) -> Iterator[tuple[int, object]]:
    """(i, batch) for this rank's batches of `loader` (a DataLoader with a batch sampler): batch i goes to rank
    i % world_size, whole, so that it is the very batch a one-rank run computes. Only these batches are read."""
    rank, world = rank_and_world()
    if world == 1:
        yield from enumerate(loader)
        return
    batches = list(loader.batch_sampler)
    mine = DataLoader(loader.dataset, batch_sampler=batches[rank::world], num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)
    yield from zip(range(rank, len(batches), world), mine)


def in_batch_order(mine: dict) -> list:
    """The values of {batch index: result} of every rank, in batch order (all ranks get them)."""
    if rank_and_world()[1] > 1:
        parts = [None] * rank_and_world()[1]
        torch.distributed.all_gather_object(parts, mine)
        mine = {i: r for part in parts for i, r in part.items()}
    return [mine[i] for i in sorted(mine)]


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    if rank_and_world()[1] > 1:
        torch.distributed.all_reduce(t)
    return t


@torch.inference_mode()
def reconstruction_report(vqvae: VQVAE, loader, n_codes: int) -> dict:
    """NMSE (MSE / DATA_VARIANCE), PSNR on [0,1] pixels, code perplexity and fraction of codes used over a split,
    on the VQ-VAE's device; shared by the ranks under torch.distributed (module docstring)."""
    vqvae.eval()
    device = _device(vqvae)
    C = vqvae.config.n_codebooks
    mses, counts = {}, torch.zeros(C, n_codes, dtype=torch.int64, device=device)
    for i, (video, _) in my_batches(loader):
        video = to_device(video, device)
        codes = vqvae.encode(video)
        mses[i] = clip_mse(video, vqvae.decode(codes)).tolist()
        counts += torch.stack([torch.bincount(column, minlength=n_codes) for column in codes.reshape(-1, C).T])
    mses = [m for batch in in_batch_order(mses) for m in batch]
    counts = _all_sum(counts).cpu().numpy()
    # perplexity per codebook, averaged over the codebooks (videogpt.vqvae.mean_perplexity, in float64 here)
    ppl = [np.exp(-(p * np.log(p + 1e-10)).sum()) for p in (row / row.sum() for row in counts)]
    return {**recon_scores(mses), "perplexity": float(sum(ppl) / len(ppl)),
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
        video = dataset[int(i)][0][None].to(_device(vqvae))
        rows += [to_uint8(video[0]).cpu().numpy(), to_uint8(vqvae.decode(vqvae.encode(video))[0]).cpu().numpy()]
    save_png(path, contact_sheet(rows), upscale=2)


def unigram_entropy_bits(counts: np.ndarray) -> float:
    """Entropy in bits of the codes' frequencies, from (n_codes,) occurrence counts."""
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())



@torch.inference_mode()
def bits_per_dim(prior: Prior, loader) -> float:
    """Mean cross-entropy per latent token / ln 2 over the loader's token grids (batches of dicts: tokens, and
    label / frames / actions where the prior is conditional), on the prior's device; shared by the ranks under
    torch.distributed (module docstring)."""
    prior.eval()
    device = _device(prior)
    losses = {}
    for i, batch in my_batches(loader):
        batch = {k: to_device(v, device) for k, v in batch.items()}
        loss = prior.loss(batch["tokens"], label=batch.get("label"), frames=batch.get("frames"),
                          actions=batch.get("actions"))
        losses[i] = (float(loss), len(batch["tokens"]))
    total, n = 0.0, 0
    for loss, size in in_batch_order(losses):  # summed in batch order: the one-rank sum, bit for bit
        total += loss * size
        n += size
    return total / max(n, 1) / math.log(2)
