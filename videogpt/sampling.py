"""Sampling from the prior: token grids, then videos through the VQ-VAE decoder.

Tokens are drawn one position at a time in raster order (t slowest, w fastest). `sample_tokens`
uses the prior's key/value cache (each step costs O(prefix)); `sample_tokens_recompute` is the plain
reference loop that runs the full forward pass at every position. Both consume randomness the same
way, so with the same seed they produce identical tokens (tested).

Randomness: a CPU `torch.Generator` seeded by `seed` draws, before any decoding, one uniform number
per (sample, position). A token is then picked by inverse-CDF lookup of that number in the (filtered)
categorical distribution, which is an exact draw from it, like `torch.multinomial`. Why not
`torch.multinomial` itself: it needs a generator on the tensor's device, so a CPU generator would
force a device->host copy of the probabilities at every step. Drawing the uniforms up front keeps the
loop free of host syncs, makes the stream device-agnostic, and makes sample i depend only on (seed, i)
and the model, not on batch_size.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from videogpt.progress import progress_bar

from videogpt.prior import Prior
from videogpt.video import to_uint8


def filter_logits(logits: torch.Tensor, top_k: Optional[int] = None, top_p: Optional[float] = None) -> torch.Tensor:
    """(B, K) logits with the excluded codes set to -inf. top_k keeps the k largest logits (exactly k,
    ties broken by index); top_p keeps the smallest set of most likely codes whose probability mass is
    >= top_p (always at least the most likely code), measured after the top-k cut."""
    logits = logits.float()
    K = logits.shape[-1]
    if top_k is not None and top_k < K:
        values, index = logits.topk(top_k, dim=-1)
        logits = torch.full_like(logits, -math.inf).scatter_(-1, index, values)
    if top_p is not None and top_p < 1.0:
        probs, order = logits.softmax(-1).sort(dim=-1, descending=True, stable=True)
        mass_before = probs.cumsum(-1) - probs  # mass of the codes more likely than this one
        drop = mass_before >= top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return logits


def choose(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
           top_p: Optional[float] = None) -> torch.Tensor:
    """Pick one code per row of (B, K) logits; u (B,) uniforms in [0, 1) supply the randomness.
    temperature 0 = argmax (greedy; u unused)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
    # Inverse CDF: the first code whose cumulative mass exceeds u * total. Codes with zero mass are
    # never chosen (their cdf equals their predecessor's); the clamp to the last code with mass guards
    # u * total rounding up to total.
    cdf = probs.cumsum(-1)
    target = (u.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    last_nonzero = (probs > 0).cumsum(-1).argmax(-1)  # the running count first peaks at the last nonzero
    return torch.minimum(index, last_nonzero)


def _check(prior: Prior, n: int, temperature, top_k, top_p, label, frames, batch_size):
    cfg = prior.config
    if n < 1:
        raise ValueError(f"n={n}: must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"sample.temperature: {temperature} must be a finite number >= 0")
    if top_k is not None and not 1 <= top_k:
        raise ValueError(f"sample.top_k: {top_k} must be >= 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"sample.top_p: {top_p} must be in (0, 1]")
    if cfg.condition == "class" and (label is None or len(label) != n):
        raise ValueError(f"class-conditional prior: pass label with {n} class ids")
    if cfg.condition == "frames" and (frames is None or frames.shape[0] != n):
        raise ValueError(f"frame-conditional prior: pass frames (n={n}, 3, {cfg.n_cond_frames}, H, W)")


def draw_uniforms(n: int, seq_len: int, seed: int) -> torch.Tensor:
    """The sampler's randomness: (n, seq_len) uniforms in [0, 1) from a CPU generator seeded by `seed`;
    entry (i, p) picks the token of sample i at flat position p."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(n, seq_len, generator=gen)


def _batches(prior, n, label, frames, batch_size, seed):
    """Yield (start, size, label, frames, uniforms) per batch, already on the prior's device."""
    device = prior.codebook.device
    u = draw_uniforms(n, prior.config.seq_len, seed)
    label = torch.as_tensor(label) if label is not None else None
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        lab = label[start:stop].to(device) if label is not None and prior.config.condition == "class" else None
        fr = frames[start:stop].to(device) if frames is not None and prior.config.condition == "frames" else None
        yield start, stop - start, lab, fr, u[start:stop].to(device)


def _run(prior, n, decode_batch, *, temperature, top_k, top_p, label, frames, seed, batch_size, progress):
    _check(prior, n, temperature, top_k, top_p, label, frames, batch_size)
    cfg = prior.config
    was_training = prior.training
    prior.eval()
    try:
        with torch.inference_mode():
            out = torch.empty(n, cfg.seq_len, dtype=torch.long, device=prior.codebook.device)
            n_batches = -(-n // batch_size)
            bar = progress_bar(total=n_batches * cfg.seq_len, desc="sampling", unit="pos", disable=not progress)
            for start, size, lab, fr, u in _batches(prior, n, label, frames, batch_size, seed):
                pick = lambda logits, pos: choose(logits, u[:, pos], temperature, top_k, top_p)
                out[start:start + size] = decode_batch(prior, size, lab, fr, pick, bar)
            bar.close()
        return out.view(n, *cfg.latent_shape).cpu()
    finally:
        prior.train(was_training)


def _decode_cached(prior: Prior, size, label, frames, pick, bar):
    cache = prior.init_cache(size)
    cond_kv = prior.cross_kv(frames)  # once per batch
    tokens = torch.empty(size, prior.config.seq_len, dtype=torch.long, device=prior.codebook.device)
    prev = None
    for pos in range(prior.config.seq_len):
        prev = pick(prior.step(prev, pos, cache, label=label, cond_kv=cond_kv), pos)
        tokens[:, pos] = prev
        bar.update(1)
    return tokens


def _decode_recompute(prior: Prior, size, label, frames, pick, bar):
    L, K = prior.config.seq_len, prior.config.n_codes
    tokens = torch.zeros(size, L, dtype=torch.long, device=prior.codebook.device)
    grid = tokens.view(size, *prior.config.latent_shape)
    for pos in range(L):
        # Positions >= pos still hold zeros; causality makes them irrelevant to the logits at pos.
        logits = prior(grid, label, frames).view(size, L, K)[:, pos]
        tokens[:, pos] = pick(logits, pos)
        bar.update(1)
    return tokens


def sample_tokens(prior: Prior, n: int, *, temperature: float = 1.0, top_k: Optional[int] = None,
                  top_p: Optional[float] = None, label=None, frames: Optional[torch.Tensor] = None,
                  seed: int = 0, batch_size: int = 16, progress: bool = False) -> torch.Tensor:
    """Draw n token grids, (n, t, h, w) long on the CPU, with the key/value cache.

    temperature 0 = greedy (argmax); top_k / top_p restrict sampling to the k most likely codes / the
    nucleus of mass top_p (None = off, the paper's setting). label: (n,) class ids for a class-
    conditional prior; frames: (n, 3, n_cond_frames, H, W) in [-0.5, 0.5] for a frame-conditional one.
    Same seed and arguments give bitwise-identical samples on the same device. The prior is run in
    eval mode (dropout off) and restored to its previous mode afterwards."""
    return _run(prior, n, _decode_cached, temperature=temperature, top_k=top_k, top_p=top_p, label=label,
                frames=frames, seed=seed, batch_size=batch_size, progress=progress)


def sample_tokens_recompute(prior: Prior, n: int, *, temperature: float = 1.0, top_k: Optional[int] = None,
                            top_p: Optional[float] = None, label=None, frames: Optional[torch.Tensor] = None,
                            seed: int = 0, batch_size: int = 16, progress: bool = False) -> torch.Tensor:
    """Reference sampler: the full forward pass at every position (no cache). Same arguments and the
    same randomness as `sample_tokens`, so it yields the same tokens; L times slower in FLOPs."""
    return _run(prior, n, _decode_recompute, temperature=temperature, top_k=top_k, top_p=top_p, label=label,
                frames=frames, seed=seed, batch_size=batch_size, progress=progress)


def tokens_to_videos(vqvae, tokens: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """Decode (n, t, h, w) tokens with the VQ-VAE (in eval mode) into uint8 videos (n, T, H, W, 3):
    clamp to [-0.5, 0.5], shift to [0, 1], scale to [0, 255] and round."""
    device = next(vqvae.parameters()).device
    was_training = vqvae.training
    vqvae.eval()  # never let the codebook's EMA move while decoding (reference issue #7)
    try:
        videos = []
        with torch.inference_mode():
            for chunk in tokens.split(batch_size):
                videos.append(to_uint8(vqvae.decode(chunk.to(device))).cpu())  # (B, T, H, W, 3)
        return torch.cat(videos).numpy()
    finally:
        vqvae.train(was_training)


def sample(prior: Prior, vqvae, n: int, **kw) -> np.ndarray:
    """Sample n videos: `sample_tokens(prior, n, **kw)`, then decode in batches of kw['batch_size']
    (default 16). Returns uint8 (n, T, H, W, 3), channels-last (docs/CONTRACTS.md)."""
    tokens = sample_tokens(prior, n, **kw)
    return tokens_to_videos(vqvae, tokens, batch_size=kw.get("batch_size", 16))
