"""GPU check at the paper's sizes: bf16 training speed, MFU and memory of the VQ-VAE and the prior, bf16 vs
float32 agreement, and the cached sampler against the recompute loop on the device.

    python -m bench.gpu [--device cuda] [--steps 10] [--warmup 3] [--tiny]

Models (paper sizes): VQ-VAE 240 channels, 4 attention-residual blocks, downsample (4, 2, 2), 1024 x 256 codes on
16x64x64 clips (VQVAEConfig's defaults); prior 8 layers x 576, 4 heads, dropout 0.2, attention dropout 0.3 on the
4x32x32 latent of that VQ-VAE. `--tiny` shrinks both (a CPU test runs it that way: tests/test_bench_gpu.py).

Reported per model, for bf16 autocast (trainer.precision=bf16-mixed) and float32: step time (forward + backward +
clip + optimizer step), throughput, model FLOP/s, MFU = model FLOP/s / the device's dense bf16 peak (float32 steps:
against the same bf16 peak, i.e. the fraction of what bf16 could give), and peak memory. The peak comes from a table
of known datasheet figures by device name; for other devices (and on the CPU) it is a bf16 matmul measured here.

Checks, each with its tolerance in the JSON:
- bf16 vs float32 loss on the same weights and batch (eval mode: no dropout; the prior with a random head so that
  its loss is not the trivial ln K): relative difference <= 2% (bf16 keeps 8 mantissa bits; the error of a
  few dozen layers stays well under that).
- bf16 vs float32 after `--steps` training steps from the same initialisation on the same batches: relative
  difference of the last loss <= 10%.
- cached sampler == recompute sampler (tokens, bitwise) on the device, with a prior of the paper's width and depth
  on a 2x8x8 latent (the recompute loop costs one full forward pass per position).
Prints one JSON object; exits with status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from bench.common import emit, log
from videogpt.prior import Prior, PriorConfig
from videogpt.sampling import sample_tokens, sample_tokens_recompute
from videogpt.vqvae import VQVAE, VQVAEConfig

# Dense (no sparsity) bf16 tensor-core peaks from the datasheets, FLOP/s. Matched by substring of the device name,
# first match wins (so the more specific names come first).
BF16_PEAKS = [
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
    ("A10G", 70e12), ("A10", 125e12), ("RTX 4090", 165e12), ("RTX 6000 Ada", 364e12),
]
LOSS_RTOL_SAME_WEIGHTS = 0.02
LOSS_RTOL_AFTER_TRAINING = 0.10

PAPER_VQVAE = VQVAEConfig(input_shape=(16, 64, 64))
PAPER_PRIOR = dict(n_layer=8, n_head=4, n_embd=576, dropout=0.2, attn_dropout=0.3)
TINY_VQVAE = VQVAEConfig(input_shape=(4, 16, 16), n_hiddens=16, res_hiddens=8, n_res_layers=1, downsample=(2, 2, 2),
                         n_codes=32, embedding_dim=8)
TINY_PRIOR = dict(n_layer=2, n_head=2, n_embd=24, dropout=0.2, attn_dropout=0.3)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device):
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3) if device.type == "cuda" else None


def measured_bf16_peak(device: torch.device, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * n ** 3 / best


def datasheet_peak(device_name: str):
    """(table key, dense bf16 FLOP/s) of the first BF16_PEAKS entry in the CUDA device name, or None."""
    return next(((key, flops) for key, flops in BF16_PEAKS if key in device_name), None)


def device_peak(device: torch.device, tiny: bool) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    known = datasheet_peak(name) if device.type == "cuda" else None
    if known:
        return {"device": name, "bf16_peak_flops": known[1], "source": f"datasheet ({known[0]}, dense bf16)"}
    n = 256 if tiny else 8192
    flops = measured_bf16_peak(device, n)
    return {"device": name, "bf16_peak_flops": float(f"{flops:.4g}"),
            "source": f"measured: best {n}^2 bf16 matmul in this process (no datasheet figure for this device)"}


def time_steps(step, device, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# --------------------------------------------------------------------------------------------
# Models


def make_vqvae(cfg: VQVAEConfig, device):
    torch.manual_seed(0)
    return VQVAE(cfg).to(device)


def make_prior(vcfg: VQVAEConfig, prior_kw: dict, device, latent_shape=None):
    """A prior over the latent grid and codebook of a VQ-VAE with config vcfg (random codebook)."""
    cfg = PriorConfig(latent_shape=latent_shape or vcfg.latent_shape, n_codes=vcfg.n_codes,
                      embedding_dim=vcfg.embedding_dim, **prior_kw)
    torch.manual_seed(0)
    return Prior(cfg, torch.randn(vcfg.n_codes, vcfg.embedding_dim)).to(device)


def train_loop(model, loss_fn, opt, batches, bf16: bool, device):
    """A step function over `batches` (cycled) and the list its losses go to (tensors; read after timing)."""
    losses, state = [], {"i": 0}

    def step():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return step, losses


def bench_model(name, model, loss_fn, make_opt, batches, items_per_step, flops_per_step, peak, device, args) -> dict:
    """Time bf16 and float32 training from the same initialisation on the same batches; compare their losses."""
    out = {"params": sum(p.numel() for p in model.parameters()), "items_per_step": items_per_step,
           "model_gflops_per_step": round(flops_per_step / 1e9, 3)}
    model.eval()
    with torch.no_grad():
        same = {}
        for prec, bf16 in (("fp32", False), ("bf16", True)):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                same[prec] = loss_fn(model, batches[0]).item()
    out["same_weights_loss"] = {**same, "rel_diff": round(rel(same["bf16"], same["fp32"]), 5),
                                "tolerance": LOSS_RTOL_SAME_WEIGHTS,
                                "ok": rel(same["bf16"], same["fp32"]) <= LOSS_RTOL_SAME_WEIGHTS}
    init = copy.deepcopy(model.state_dict())
    last = {}
    for prec, bf16 in (("bf16", True), ("fp32", False)):
        model.load_state_dict(init)
        model.train()
        opt = make_opt(model)
        torch.manual_seed(1)  # the same dropout stream for both precisions
        step, losses = train_loop(model, loss_fn, opt, batches, bf16, device)
        reset_memory(device)
        times = time_steps(step, device, args.steps, args.warmup)
        t = min(times)
        last[prec] = losses[-1].item()
        out[prec] = {"step_s_min": round(t, 5), "step_s_median": round(sorted(times)[len(times) // 2], 5),
                     "items_per_s": round(items_per_step / t, 2), "model_tflops": float(f"{flops_per_step / t / 1e12:.4g}"),
                     "mfu_vs_bf16_peak": round(flops_per_step / t / peak["bf16_peak_flops"], 4),
                     "peak_memory_gb": peak_memory_gb(device), "loss_first": round(losses[0].item(), 5),
                     "loss_last": round(last[prec], 5)}
        log(f"{name} {prec}: {out[prec]}")
    out["after_training_loss"] = {"steps": args.warmup + args.steps, **last,
                                  "rel_diff": round(rel(last["bf16"], last["fp32"]), 5),
                                  "tolerance": LOSS_RTOL_AFTER_TRAINING,
                                  "ok": rel(last["bf16"], last["fp32"]) <= LOSS_RTOL_AFTER_TRAINING}
    model.load_state_dict(init)
    return out


def vqvae_section(cfg, batch, peak, device, args) -> dict:
    model = make_vqvae(cfg, device)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(batch, 3, *cfg.input_shape, generator=gen) - 0.5).to(device) for _ in range(2)]
    # The first (training-mode) forward initialises the codebook from the data; do it once, in float32.
    with torch.no_grad():
        model.train()(batches[0])
    flops = model.flops_per_clip(backward=True) * batch
    return bench_model("vqvae", model, lambda m, x: m(x)["loss"],
                       lambda m: torch.optim.Adam(m.parameters(), lr=3e-4), batches, batch, flops, peak, device, args)


def prior_section(vqvae_cfg, prior_kw, batch, peak, device, args) -> dict:
    prior = make_prior(vqvae_cfg, prior_kw, device)
    torch.nn.init.normal_(prior.head.weight, std=0.02)  # not the zero head: a loss that is not exactly ln K
    cfg = prior.config
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.n_codes, (batch, *cfg.latent_shape), generator=gen).to(device) for _ in range(2)]
    flops = 3 * prior.flops_per_token() * batch * cfg.seq_len
    return bench_model("prior", prior, lambda m, t: m.loss(t),
                       lambda m: torch.optim.AdamW(m.parameters(), lr=3e-4), batches, batch * cfg.seq_len, flops,
                       peak, device, args)


def sampler_section(vqvae_cfg, prior_kw, device, args) -> dict:
    small = make_prior(vqvae_cfg, prior_kw, device, latent_shape=(2, 4, 4) if args.tiny else (2, 8, 8))
    torch.nn.init.normal_(small.head.weight, std=1.0)  # peaked, varied distributions
    kw = dict(seed=0, batch_size=4)
    cached = sample_tokens(small, 4, **kw)
    recompute = sample_tokens_recompute(small, 4, **kw)
    out = {"latent_shape": list(small.config.latent_shape), "cached_equals_recompute": bool(torch.equal(cached, recompute))}
    # Speed of the cached sampler at the full size: the first positions of a batch (per-position cost grows
    # with the prefix; the JSON says how many were timed).
    prior = make_prior(vqvae_cfg, prior_kw, device).eval()
    n_pos = min(prior.config.seq_len, 64 if args.tiny else 512)
    for bs in (1, 16):
        with torch.inference_mode():
            cache = prior.init_cache(bs)
            prev = None
            sync(device)
            t0 = time.perf_counter()
            for pos in range(n_pos):
                prev = prior.step(prev, pos, cache).argmax(-1)
            sync(device)
        out[f"cached_ms_per_position_b{bs}"] = round((time.perf_counter() - t0) / n_pos * 1e3, 3)
    out["positions_timed"] = f"0..{n_pos - 1} of {prior.config.seq_len}"
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per precision")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--vqvae-batch", type=int, default=None, help="default 8 (tiny: 2)")
    ap.add_argument("--prior-batch", type=int, default=None, help="default 8 (tiny: 2)")
    ap.add_argument("--tiny", action="store_true", help="tiny models (for a CPU test)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.gpu: no CUDA device; pass --device cpu --tiny to run the CPU check")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the float32 runs are true float32
        torch.backends.cudnn.allow_tf32 = False
    vqvae_cfg, prior_kw = (TINY_VQVAE, TINY_PRIOR) if args.tiny else (PAPER_VQVAE, PAPER_PRIOR)
    vb = args.vqvae_batch or (2 if args.tiny else 8)
    pb = args.prior_batch or (2 if args.tiny else 8)
    peak = device_peak(device, args.tiny)
    log(f"peak: {peak}")
    result = {"bench": "gpu", "tiny": args.tiny, "peak": peak, "torch": torch.__version__,
              "vqvae_config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(vqvae_cfg).items()},
              "prior_config": {**prior_kw, "latent_shape": list(vqvae_cfg.latent_shape)},
              "vqvae": vqvae_section(vqvae_cfg, vb, peak, device, args),
              "prior": prior_section(vqvae_cfg, prior_kw, pb, peak, device, args),
              "sampler": sampler_section(vqvae_cfg, prior_kw, device, args)}
    checks = {"vqvae_bf16_same_weights": result["vqvae"]["same_weights_loss"]["ok"],
              "vqvae_bf16_after_training": result["vqvae"]["after_training_loss"]["ok"],
              "prior_bf16_same_weights": result["prior"]["same_weights_loss"]["ok"],
              "prior_bf16_after_training": result["prior"]["after_training_loss"]["ok"],
              "sampler_cached_equals_recompute": result["sampler"]["cached_equals_recompute"]}
    result["checks"] = checks
    result["ok"] = all(checks.values())
    out = emit(result)
    if not result["ok"]:
        log(f"FAILED checks: {[k for k, v in checks.items() if not v]}")
        sys.exit(1)
    return out


if __name__ == "__main__":
    main()
