"""Loss curves with and without each kernel / precision change, same seed, side by side: does a faster path
train the same model?

    python -m bench.loss_curves [--what prior,vqvae] [--steps 300] [--tokens data/tokens.zarr] [--threads 2]

prior: a small prior (2 layers x 64, 4 heads, dropout 0.2, attention dropout 0.3, AdamW 1e-3, batch 16) trained on
  the token grids of --tokens (the default dataset's, made by `dvc repro`) or, when that store is absent, on a
  stand-in: moving-digit clips (the default dataset's generator) quantised patch-wise to the nearest of 128 patch
  vectors. Variants:
  - sdpa: PyTorch's F.scaled_dot_product_attention with dropout_p (its unfused path: what the prior used before);
  - sdpa_seed1: the same with another dropout seed (initialisation and batches unchanged): the noise band;
  - blocked: videogpt.prior.causal_attention_with_dropout (the default now);
  - blocked_seed1: the same with the other dropout seed;
  - blocked_bf16: the same under torch.autocast("cpu", bfloat16) (trainer.precision=bf16-mixed).
vqvae: a small VQ-VAE (64 ch, 1 res block, 8x32x32 moving-digit clips, batch 8, Adam 7e-4). Variants:
  - channels_last: the default (channels-last 3D weights and activations);
  - channels_first: the contiguous NCDHW layout the model used before;
  - seed1: the default with another initialisation and batch order: the noise band;
  - bf16: the default under bf16 autocast.
  Held-out NMSE of 64 test clips at the end.

bf16 runs only where oneDNN has native bf16 kernels (AVX512-BF16/AMX); on an AVX2-only CPU bf16 autocast is
5-20x slower than float32 (measured), so it is recorded as skipped there unless --bf16 is given.

Each run reports its loss every `--every` steps, `initial` (mean of its first 10 steps), `final` (mean of its last
25 steps) and a held-out figure after training (prior: test bits/dim in eval mode; VQ-VAE: NMSE of 64 test clips).
Prints one JSON object.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import REPO, emit, log, moving_digit_clips, native_bf16, parser, set_threads
from videogpt import prior as prior_module
from videogpt.prior import Prior, PriorConfig
from videogpt.vqvae import VQVAE, VQVAEConfig


def sdpa_attention(q, k, v, p):
    """What SelfAttention ran with attention dropout before: PyTorch's own (unfused on the CPU) path."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)


# --------------------------------------------------------------------------------------------
# Data


def clip_array(n: int, seed: int, T: int = 8, R: int = 32) -> torch.Tensor:
    """(n, 3, T, R, R) float moving-digit clips in [-0.5, 0.5]."""
    x = np.stack([c for _, c in moving_digit_clips(n, T, R, seed=seed)])
    return torch.from_numpy(x).permute(0, 4, 1, 2, 3).float().div(255).sub(0.5).contiguous()


def stand_in_tokens(n_train: int, n_test: int, n_codes: int = 128, patch=(2, 4, 4)) -> tuple[np.ndarray, np.ndarray]:
    """Token grids (n, 4, 8, 8) with the structure of the default data: 8x32x32 moving-digit clips cut into 2x4x4
    patches, each replaced by the index of its nearest patch among n_codes drawn from the training clips."""
    def patches(clips):
        g = clips[:, 0]  # grey: the digits are white
        n, T, H, W = g.shape
        pt, ph, pw = patch
        p = g.reshape(n, T // pt, pt, H // ph, ph, W // pw, pw).permute(0, 1, 3, 5, 2, 4, 6)
        return p.reshape(n, T // pt, H // ph, W // pw, -1)

    train, test = patches(clip_array(n_train, 0)), patches(clip_array(n_test, 1))
    flat = train.reshape(-1, train.shape[-1])
    gen = torch.Generator().manual_seed(0)
    book = flat[torch.randperm(len(flat), generator=gen)[:n_codes]]
    code = lambda p: torch.cdist(p.reshape(-1, p.shape[-1]), book).argmin(1).reshape(p.shape[:-1]).numpy()
    return code(train), code(test)


def token_data(path: str | None) -> tuple[np.ndarray, np.ndarray, int, str]:
    if path and Path(path).exists():
        from videogpt.tokens import TokenDataset, open_token_store
        n_codes = int(open_token_store(path).attrs["n_codes"])
        return TokenDataset(path, "train").tokens, TokenDataset(path, "test").tokens, n_codes, f"token store {path}"
    train, test = stand_in_tokens(320, 80)
    return train, test, 128, "stand-in: moving digits quantised patch-wise to 128 codes (no token store found)"


# --------------------------------------------------------------------------------------------
# Runs


def summary(losses: list[float], every: int) -> dict:
    return {"initial": round(float(np.mean(losses[:10])), 4), "final": round(float(np.mean(losses[-25:])), 4),
            "curve": [round(v, 4) for v in losses[::every]]}


def prior_run(train: np.ndarray, test: np.ndarray, n_codes: int, steps: int, every: int, *, attention, bf16: bool,
              dropout_seed: int = 0) -> dict:
    cfg = PriorConfig(latent_shape=train.shape[1:], n_codes=n_codes, embedding_dim=16, n_layer=2, n_head=4,
                      n_embd=64, dropout=0.2, attn_dropout=0.3)
    torch.manual_seed(0)
    prior = Prior(cfg, torch.randn(n_codes, 16))
    opt = torch.optim.AdamW(prior.parameters(), lr=1e-3)
    order = np.random.default_rng(0).integers(0, len(train), size=(steps, 16))  # same batches in every run
    x_train, x_test = torch.from_numpy(train.astype(np.int64)), torch.from_numpy(test.astype(np.int64))
    torch.manual_seed(1000 + dropout_seed)  # dropout masks
    saved, prior_module.causal_attention_with_dropout = prior_module.causal_attention_with_dropout, attention
    losses, t0 = [], time.perf_counter()
    try:
        prior.train()
        for step in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = prior.loss(x_train[order[step]])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item() / math.log(2))
    finally:
        prior_module.causal_attention_with_dropout = saved
    seconds = time.perf_counter() - t0
    prior.eval()
    with torch.no_grad():
        test_bits = sum(prior.loss(b).item() * len(b) for b in x_test.split(64)) / len(x_test) / math.log(2)
    return {**summary(losses, every), "test_bits_per_dim": round(test_bits, 4), "seconds": round(seconds, 1),
            "unit": "bits/dim"}


def vqvae_run(steps: int, every: int, *, bf16: bool, seed: int = 0, channels_last: bool = True) -> dict:
    cfg = VQVAEConfig(input_shape=(8, 32, 32), n_hiddens=64, res_hiddens=32, n_res_layers=1, downsample=(2, 4, 4),
                      n_codes=128, embedding_dim=32)
    train, test = clip_array(256, 0), clip_array(64, 1)
    torch.manual_seed(seed)
    model = VQVAE(cfg)
    if not channels_last:  # the layout before: NCDHW weights, and activations left as they come
        model.to(memory_format=torch.contiguous_format)
        model._channels_last = lambda x: x
    opt = torch.optim.Adam(model.parameters(), lr=7e-4)
    order = np.random.default_rng(seed).integers(0, len(train), size=(steps, 8))
    losses, t0 = [], time.perf_counter()
    model.train()
    for step in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(train[order[step]])
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out["recon_loss"].item())
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        nmse = model(test)["recon_loss"].item()
    return {**summary(losses, every), "test_nmse": round(nmse, 4), "seconds": round(seconds, 1),
            "unit": "NMSE (MSE / 0.06)"}


def main(argv=None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--what", default="prior,vqvae")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=25, help="curve points: the loss every N steps")
    ap.add_argument("--tokens", default=str(REPO / "data" / "tokens.zarr"))
    ap.add_argument("--bf16", action="store_true", help="run the bf16 variants even without native bf16 kernels")
    ap.add_argument("--only", default=None, help="comma-separated variant names to run (default: all)")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    steps = min(args.steps, 60) if args.quick else args.steps
    bf16 = args.bf16 or native_bf16()
    skipped = "skipped: no native bf16 kernels on this CPU (pass --bf16 to run anyway)"
    only = args.only.split(",") if args.only else None

    def run_variants(model: str, variants: dict, results: dict, fit) -> None:
        """Train each variant (`only` those asked for; bf16 ones skipped without native bf16) into results."""
        for name, kw in variants.items():
            if only and name not in only:
                continue
            if kw["bf16"] and not bf16:
                results[name] = skipped
                continue
            results[name] = fit(**kw)
            log(f"{model} {name}: {({k: v for k, v in results[name].items() if k != 'curve'})}")

    out = {}
    if "prior" in args.what:
        train, test, n_codes, source = token_data(args.tokens)
        blocked = prior_module.causal_attention_with_dropout
        runs = {"sdpa": dict(attention=sdpa_attention, bf16=False),
                "sdpa_seed1": dict(attention=sdpa_attention, bf16=False, dropout_seed=1),
                "blocked": dict(attention=blocked, bf16=False),
                "blocked_seed1": dict(attention=blocked, bf16=False, dropout_seed=1),
                "blocked_bf16": dict(attention=blocked, bf16=True)}
        out["prior"] = {"data": source, "train_grids": len(train), "latent_shape": list(train.shape[1:]),
                        "runs": {}}
        run_variants("prior", runs, out["prior"]["runs"], lambda **kw: prior_run(train, test, n_codes, steps,
                                                                               args.every, **kw))
    if "vqvae" in args.what:
        runs = {"channels_last": dict(bf16=False), "channels_first": dict(bf16=False, channels_last=False),
                "seed1": dict(bf16=False, seed=1), "bf16": dict(bf16=True)}
        out["vqvae"] = {"data": "moving-digit clips 8x32x32 (the default dataset's generator)", "runs": {}}
        run_variants("vqvae", runs, out["vqvae"]["runs"], lambda **kw: vqvae_run(steps, args.every, **kw))
    return emit({"bench": "loss_curves", "threads": threads, "steps": steps, "results": out})


if __name__ == "__main__":
    main()
