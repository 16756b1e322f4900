"""VQ-VAE throughput and MFU: training clips/s (forward + backward + grad clip + Adam step, as the
train_vqvae stage does it) and encode clips/s (eval, inference_mode, as the tokenize stage does it).

    python -m bench.vqvae [--threads N] [--configs default,default_bf16,paper] [--quick] [--profile]

Configs:
- default: params.yaml's vqvae.* on data.sequence_length x data.resolution^2 clips, vqvae.batch_size
  clips per step, tokenize.batch_size clips per encode batch.
- default_bf16: default under torch.autocast("cpu", bfloat16), what trainer.precision=bf16-mixed does (the
  codebook stays float32; MFU still against the float32 matmul peak -- compare clips/s).
- paper: the paper's VQ-VAE (VQVAEConfig defaults: 240 trunk, 128 residual, 4 attention-residual blocks,
  downsample (4, 2, 2), 1024 x 256 codebook) on 16 x 64 x 64 clips, at a small batch.

MFU = (model FLOPs per clip x clips/s) / the float32 matmul peak sampled in this process, at the same thread
count, just before each timed step (bench/common.Peak); mfu_vs_conv_peak uses the best large oneDNN conv3d
instead (the higher ceiling on CPUs where MKL's sgemm does not use AVX-512). Model FLOPs come from
VQVAE.flops_per_clip (torch's FlopCounterMode on the meta device: convs, linears, attention; forward + backward
for training; the outputs that SamePadConv3d computes and then crops are counted too). Prints one JSON object.
"""
from __future__ import annotations

import torch

from bench.common import (NO_BF16, REPO, Peak, emit, loadavg, log, moving_digit_clips, native_bf16, parser,
                          profile_top, set_threads, summarize)
from videogpt.vqvae import VQVAE, VQVAEConfig


def default_config():
    """(VQVAEConfig, train batch, encode batch) of params.yaml (the real config builder of train_vqvae)."""
    from videogpt.config import load
    params = load(REPO / "params.yaml")
    d = params.data
    cfg = VQVAEConfig.from_params(params.vqvae, (d.sequence_length, d.resolution, d.resolution))
    return cfg, params.vqvae.batch_size, params.tokenize.batch_size, params.vqvae.lr


def configs():
    cfg, train_bs, enc_bs, lr = default_config()
    yield "default", cfg, train_bs, enc_bs, lr
    yield "default_bf16", cfg, train_bs, enc_bs, lr
    yield "paper", VQVAEConfig(input_shape=(16, 64, 64)), 1, 4, 7e-4


def clip_batch(cfg: VQVAEConfig, batch: int) -> torch.Tensor:
    """(B, 3, T, H, W) float in [-0.5, 0.5]: moving digits (the data the pipeline trains on)."""
    T, H, W = cfg.input_shape
    assert H == W
    clips = [torch.from_numpy(c) for _, c in moving_digit_clips(batch, T, H)]
    return torch.stack(clips).permute(0, 4, 1, 2, 3).float().div(255).sub(0.5).contiguous()


def encode_flops(cfg: VQVAEConfig) -> int:
    """FLOPs of VQVAE.encode on one clip (encoder + nearest-code search), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        model = VQVAE(cfg).eval()
        x = torch.zeros(1, 3, *cfg.input_shape)
    with FlopCounterMode(display=False) as counter:
        model.encode(x)
    return int(counter.get_total_flops())


def bench_config(name, cfg, train_bs, enc_bs, lr, peak: Peak, runs: int, warmup: int, profile: bool) -> dict:
    torch.manual_seed(0)
    model = VQVAE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    x = clip_batch(cfg, max(train_bs, enc_bs))
    xt, xe = x[:train_bs].contiguous(), x[:enc_bs].contiguous()

    bf16 = name.endswith("_bf16")

    def train_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(xt)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # make_trainer's gradient_clip_val
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    load0 = loadavg()
    train_times, train_peaks = peak.time_paired(train_step, warmup=warmup, runs=runs)
    train_cpu = peak.last_cpu_per_wall
    train_flops = model.flops_per_clip(backward=True)
    train_cps = train_bs / summarize(train_times)["median_s"]
    log(f"{name}: train {train_cps:.2f} clips/s")
    result = {
        "vqvae": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "params": sum(p.numel() for p in model.parameters()),
        "precision": "bf16-mixed (autocast)" if bf16 else "32-true",
        "train": {"batch_size": train_bs, "clips_per_s": round(train_cps, 3), **summarize(train_times),
                  "gflops_per_clip_fwd_bwd": round(train_flops / 1e9, 4),
                  "achieved_gflops": round(train_cps * train_flops / 1e9, 2),
                  **peak.mfu_stats(train_flops * train_bs, train_times, train_peaks),
                  "cpu_s_per_wall_s": round(train_cpu, 2)},
    }
    if profile:
        result["train"]["profile_top_ops"] = profile_top(train_step, steps=2)

    model.eval()
    enc_flops = encode_flops(cfg)

    def encode():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.encode(xe)

    enc_times, enc_peaks = peak.time_paired(encode, warmup=1, runs=max(runs, 3))
    enc_cps = enc_bs / summarize(enc_times)["median_s"]
    log(f"{name}: encode {enc_cps:.2f} clips/s")
    result["encode"] = {"batch_size": enc_bs, "clips_per_s": round(enc_cps, 3), **summarize(enc_times),
                        "gflops_per_clip": round(enc_flops / 1e9, 4),
                        "achieved_gflops": round(enc_cps * enc_flops / 1e9, 2),
                        **peak.mfu_stats(enc_flops * enc_bs, enc_times, enc_peaks),
                        "cpu_s_per_wall_s": round(peak.last_cpu_per_wall, 2)}
    if profile:
        result["encode"]["profile_top_ops"] = profile_top(encode, steps=2)
    result["loadavg_before_after"] = [load0, loadavg()]
    return result


def main(argv=None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="default,default_bf16,paper")
    ap.add_argument("--runs", type=int, default=None, help="timed steps (default 5 for default, 2 for paper)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="add the top ops of torch.profiler to the JSON")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    wanted = args.configs.split(",")
    peak = Peak()
    out, skipped = {}, {}
    for name, cfg, train_bs, enc_bs, lr in configs():
        if name not in wanted:
            continue
        if name.endswith("_bf16") and not native_bf16():
            skipped[name] = NO_BF16
            continue
        runs = args.runs or (2 if name == "paper" else 5)
        if args.quick:
            runs = min(runs, 1 if name == "paper" else 3)
        out[name] = bench_config(name, cfg, train_bs, enc_bs, lr, peak, runs, args.warmup, args.profile)
    headline = {f"{name}_{what}": {"clips_per_s": r[what]["clips_per_s"], "mfu": r[what]["mfu"]}
                for name, r in out.items() for what in ("train", "encode")}
    return emit({"bench": "vqvae", "threads": threads, "peak": peak.record(), "headline": headline,
                 "results": out, "skipped": skipped,
                 "method": "median wall time per step after warm-up; train = forward + backward + clip_grad_norm_(1.0) "
                           "+ Adam.step + zero_grad on one in-memory batch; encode = VQVAE.encode under "
                           "inference_mode in eval mode"})


if __name__ == "__main__":
    main()
