"""Sampling throughput: the KV-cached sampler vs the recompute-everything reference loop.

    python -m bench.sample [--threads N] [--configs default,large] [--batch-sizes 1,16] [--device cpu]

Prints one JSON document. For every config and batch size:
- cached: a full `sample_tokens` run (all L positions), timed end to end (after a warm-up).
- recompute: the reference loop's per-position work is a full forward pass over the whole grid, the
  same cost at every position. Running all L positions would take hours at the large config, so
  unless --recompute-full is given it is timed on two windows of positions, the first W and the last W
  (starting from a grid prefilled with the cached sampler's tokens), and the time is extrapolated
  linearly to L positions; the JSON says which. As a check that the windows did the real work, the
  tokens they produce must equal the cached sampler's tokens at those positions (same seed, same
  uniforms).
The prior is randomly initialised (random, non-zero head): speed does not depend on the weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from videogpt.prior import Prior, PriorConfig
from videogpt.sampling import choose, draw_uniforms, sample_tokens, sample_tokens_recompute

CONFIGS = {
    # prior defaults of params.yaml on the default VQ-VAE latent
    "default": dict(latent_shape=(4, 8, 8), n_codes=128, embedding_dim=32, n_layer=4, n_embd=128, n_head=4),
    # the reference prior width/depth on a 4x16x16 latent with a 1024 x 256 codebook
    "large": dict(latent_shape=(4, 16, 16), n_codes=1024, embedding_dim=256, n_layer=8, n_embd=576, n_head=4),
}
DEFAULT_WINDOW = {"default": 16, "large": 3}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(name: str, device) -> Prior:
    torch.manual_seed(0)
    cfg = PriorConfig(**CONFIGS[name], dropout=0.0, attn_dropout=0.0)
    prior = Prior(cfg, torch.randn(cfg.n_codes, cfg.embedding_dim))
    torch.nn.init.normal_(prior.head.weight, std=0.02)
    return prior.to(device).eval()


def time_cached(prior, bs, seed, device):
    with torch.inference_mode():  # warm-up: a few steps
        cache = prior.init_cache(bs)
        prev = None
        for pos in range(4):
            prev = prior.step(prev, pos, cache).argmax(-1)
    sync(device)
    t0 = time.perf_counter()
    tokens = sample_tokens(prior, bs, seed=seed, batch_size=bs)
    sync(device)
    return tokens, time.perf_counter() - t0


def time_recompute_windows(prior, tokens, bs, seed, window, device):
    """The reference loop's body (full forward, take position pos, choose, write) on positions
    [0, W) and [L-W, L) of a grid prefilled with `tokens`. Returns (seconds, positions, tokens_match)."""
    cfg = prior.config
    L = cfg.seq_len
    u = draw_uniforms(bs, L, seed).to(device)
    grid = tokens.to(device).clone().reshape(bs, L)
    positions = sorted(set(range(window)) | set(range(L - window, L)))
    match = True
    with torch.inference_mode():
        prior(grid.view(bs, *cfg.latent_shape))  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for pos in positions:
            logits = prior(grid.view(bs, *cfg.latent_shape)).view(bs, L, cfg.n_codes)[:, pos]
            tok = choose(logits, u[:, pos])
            match &= bool(torch.equal(tok, grid[:, pos]))  # tiny host sync; not in the real loop
            grid[:, pos] = tok
        sync(device)
        return time.perf_counter() - t0, positions, match


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--configs", default="default,large")
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=None,
                    help="recompute positions timed at each end of the sequence (default: 16 / 3 per config)")
    ap.add_argument("--recompute-full", action="store_true", help="time the whole recompute loop (slow)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = {
        "bench": "sample",
        "torch": torch.__version__,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "seed": args.seed,
        "cached_method": "full sample_tokens run over all L positions (KV cache, prefix attention)",
        "results": [],
    }
    for name in args.configs.split(","):
        prior = build(name, device)
        cfg = prior.config
        L = cfg.seq_len
        entry = {
            "config": name,
            "prior": {k: (list(v) if isinstance(v, tuple) else v) for k, v in CONFIGS[name].items()},
            "seq_len": L,
            "params": prior.num_params(),
            "flops_per_token_full_forward": prior.flops_per_token(),
            "runs": [],
        }
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            tokens, t_cached = time_cached(prior, bs, args.seed, device)
            run = {"batch_size": bs, "cached_s": round(t_cached, 3),
                   "cached_tokens_per_s": round(bs * L / t_cached, 1)}
            if args.recompute_full:
                sync(device)
                t0 = time.perf_counter()
                ref = sample_tokens_recompute(prior, bs, seed=args.seed, batch_size=bs)
                sync(device)
                t_rec = time.perf_counter() - t0
                run.update(recompute_method="full sample_tokens_recompute run over all L positions",
                           recompute_s=round(t_rec, 3), recompute_tokens_equal_cached=bool(torch.equal(ref, tokens)))
            else:
                window = args.window or DEFAULT_WINDOW.get(name, 8)
                window = min(window, L // 2)
                t_win, positions, match = time_recompute_windows(prior, tokens, bs, args.seed, window, device)
                t_rec = t_win / len(positions) * L
                run.update(recompute_method=(f"extrapolated: timed positions [0,{window}) and [{L - window},{L}) "
                                             f"({len(positions)} of {L}) of the reference loop on a prefilled grid, "
                                             f"x {L}/{len(positions)}"),
                           recompute_timed_s=round(t_win, 3),
                           recompute_s_per_position=round(t_win / len(positions), 4),
                           recompute_s_extrapolated=round(t_rec, 1),
                           recompute_tokens_equal_cached=match)
            run["recompute_tokens_per_s"] = round(bs * L / t_rec, 2)
            run["speedup_cached_vs_recompute"] = round(t_rec / t_cached, 1)
            entry["runs"].append(run)
            print(f"[bench] {name} bs={bs}: {json.dumps(run)}", file=sys.stderr, flush=True)
        report["results"].append(entry)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
