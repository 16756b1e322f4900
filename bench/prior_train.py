"""GPT-prior training throughput and MFU: tokens/s of one optimizer step (forward + backward + grad clip +
AdamW step + LR schedule step, as PriorModule under make_trainer does it) on in-memory token grids.

    python -m bench.prior_train [--threads N] [--configs default,large,default_no_attn_dropout] [--quick] [--profile]

Configs:
- default: params.yaml's prior.* on the default VQ-VAE's latent grid and codebook size, prior.batch_size grids.
- large: the paper's prior width/depth (8 layers, 576 wide, 4 heads) on a 4x16x16 latent with a 1024 x 256
  codebook (bench/sample.py's "large"), 1 grid (1024 tokens) per step.
- default_no_attn_dropout: default with prior.attn_dropout=0, to show what the attention dropout costs
  (with dropout the CPU SDPA falls back to the unfused math path and draws an L x L Bernoulli mask).
- large_bf16: large under torch.autocast("cpu", bfloat16), what trainer.precision=bf16-mixed does (its MFU is
  still against the float32 matmul peak, so it can exceed 100%; compare tokens/s).

MFU = 3 x Prior.flops_per_token() (forward FLOPs, full-context attention as in the nanoGPT/PaLM convention;
training = forward + 2x for backward) x tokens/s / the float32 matmul peak sampled right before each step
(bench/common.py). `mfu_causal_adjusted` counts only the unmasked half of the attention scores instead.
Prints one JSON object.
"""
from __future__ import annotations

import torch

from bench.common import (NO_BF16, REPO, Peak, emit, loadavg, log, native_bf16, parser, profile_top, set_threads,
                          summarize)
from videogpt.lightning import PriorModule
from videogpt.prior import Prior, PriorConfig

LARGE = dict(latent_shape=(4, 16, 16), n_codes=1024, embedding_dim=256, n_layer=8, n_embd=576, n_head=4)


def default_config() -> tuple[PriorConfig, int, object]:
    """The prior of params.yaml, built as the train_prior stage builds it (PriorConfig.from_params)."""
    from videogpt.config import load
    from videogpt.vqvae import VQVAEConfig
    params = load(REPO / "params.yaml")
    d = params.data
    vqvae = VQVAEConfig.from_params(params.vqvae, (d.sequence_length, d.resolution, d.resolution))
    cfg = PriorConfig.from_params(params.prior, vqvae, n_classes=0, frame_shape=(d.resolution, d.resolution))
    return cfg, params.prior.batch_size, params.prior


def configs():
    cfg, bs, pp = default_config()
    yield "default", cfg, bs, pp
    large = PriorConfig(**LARGE, dropout=pp.dropout, attn_dropout=pp.attn_dropout)
    yield "large", large, 1, pp
    yield "default_no_attn_dropout", PriorConfig(**{**vars(cfg), "attn_dropout": 0.0}), bs, pp
    yield "large_bf16", large, 1, pp  # trainer.precision=bf16-mixed: autocast to bfloat16 on the CPU


def bench_config(name, cfg: PriorConfig, batch: int, pp, peak: Peak, runs: int, warmup: int, profile: bool) -> dict:
    torch.manual_seed(0)
    prior = Prior(cfg, torch.randn(cfg.n_codes, cfg.embedding_dim))
    module = PriorModule(prior, lr=pp.lr, weight_decay=pp.weight_decay, warmup_steps=pp.warmup_steps,
                         max_steps=pp.max_steps)
    opt_cfg = module.configure_optimizers()  # the stage's AdamW groups and cosine schedule
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    tokens = torch.randint(0, cfg.n_codes, (batch, *cfg.latent_shape))
    prior.train()

    bf16 = name.endswith("_bf16")

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = prior.loss(tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)  # make_trainer's gradient_clip_val
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    load0 = loadavg()
    times, peaks = peak.time_paired(step, warmup=warmup, runs=runs)
    L = cfg.seq_len
    tokens_per_step = batch * L
    fwd = prior.flops_per_token()
    train_flops = 3 * fwd
    causal_saving = 3 * 2 * cfg.n_layer * L * cfg.n_embd  # half of the 4*n_layer*L*D score/sum FLOPs, x3
    tps = tokens_per_step / summarize(times)["median_s"]
    log(f"{name}: {tps:.0f} tokens/s")
    mfu = peak.mfu_stats(train_flops * tokens_per_step, times, peaks)
    mfu_c = peak.mfu_stats((train_flops - causal_saving) * tokens_per_step, times, peaks)
    result = {
        "prior": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "params": prior.num_params(), "seq_len": L, "batch_size": batch,
        "precision": "bf16-mixed (autocast)" if bf16 else "32-true",
        "tokens_per_s": round(tps, 1), **summarize(times),
        "mflops_per_token_fwd": round(fwd / 1e6, 4), "train_flops_multiplier": 3,
        "achieved_gflops": round(tps * train_flops / 1e9, 2),
        **mfu, "mfu_causal_adjusted": mfu_c["mfu"],
        "cpu_s_per_wall_s": round(peak.last_cpu_per_wall, 2),
        "loadavg_before_after": [load0, loadavg()],
    }
    if profile:
        result["profile_top_ops"] = profile_top(step, steps=2)
    return result


def main(argv=None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="default,large,default_no_attn_dropout,large_bf16")
    ap.add_argument("--runs", type=int, default=None, help="timed steps (default 5; 3 for large)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="add the top ops of torch.profiler to the JSON")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    wanted = args.configs.split(",")
    peak = Peak()
    out, skipped = {}, {}
    for name, cfg, batch, pp in configs():
        if name not in wanted:
            continue
        if name.endswith("_bf16") and not native_bf16():
            skipped[name] = NO_BF16
            continue
        runs = args.runs or (3 if name.startswith("large") else 5)
        if args.quick:
            runs = min(runs, 3)
        out[name] = bench_config(name, cfg, batch, pp, peak, runs, args.warmup, args.profile)
    headline = {name: {"tokens_per_s": r["tokens_per_s"], "mfu": r["mfu"],
                       "mfu_vs_best_peak": r["mfu_vs_best_peak"]} for name, r in out.items()}
    return emit({"bench": "prior_train", "threads": threads, "peak": peak.record(), "headline": headline,
                 "results": out, "skipped": skipped,
                 "method": "median wall time per step after warm-up, each step paired with a float32 matmul peak "
                           "sample taken just before it"})


if __name__ == "__main__":
    main()
