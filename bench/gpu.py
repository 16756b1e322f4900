"""GPU check of the presets as they train: bf16 training speed, MFU and memory of each preset's own VQ-VAE and
prior, bf16 against float32 on data whose loss falls, the sampler over every position, and a predicted wall time
per stage.

    python -m bench.gpu [--preset ucf101 ...] [--device cuda] [--steps 20] [--warmup 3] [--tiny]

Models: params/presets/<name>.yaml's VQ-VAE and prior (bench.gpu_memory.preset_models), trained at the preset's
per-device batch (vqvae.batch_size / prior.batch_size: one accumulation step) with its
trainer.checkpoint_activations and learning rates (vqvae.lr / prior.lr). `--tiny` replaces them with tiny models at the Moving MNIST preset's params, so a
CPU test runs every code path (tests/test_bench_gpu.py).

Data: moving-digit clips (the built-in dataset's generator) at the preset's resolution and length, and their
codes under the VQ-VAE this bench has just trained (conditioning frames: the clips' first frames): losses that
can fall, unlike uniform random tokens, whose loss stays at ln K.

Per model, in bf16 autocast (trainer.precision bf16-mixed) at the preset's batch: the MEDIAN of the timed steps
after `--warmup` untimed ones (forward + backward + clip + optimizer step), throughput, model FLOP/s and MFU against
the device's dense bf16 peak (datasheet by device name, else a measured bf16 matmul), peak memory
(torch.cuda.max_memory_allocated; compare with bench.gpu_memory). float32 runs only in the comparison below, on
batches of COMPARE_BATCH items (a preset batch in float32 needs about twice the memory). The prior's FLOPs are counted as executed:
causal attention computes half the score matrix (Prior.flops_per_token counts all of it).

Checks, with their tolerances in the JSON:
- bf16 vs float32 loss on the same weights and batch (eval mode): relative difference <= 2%;
- bf16 vs float32 after the same training steps from the same initialisation (small batches): the means of the last
  three losses within 15% (the VQ-VAE's dead-code restarts amplify rounding differences);
- the bf16 loss falls: the mean of the last three steps' losses <= 95% of the first step's;
- the cached sampler at temperature 0 picks every token the prior's full forward pass picks (on the device).

Also recorded: torch, CUDA and cuDNN versions, the device and its compute capability, the SDPA kernel the prior's
causal attention dispatches to at its training shape. The sampler is timed over all positions of a batch of
sample.batch_size after a warm-up run; the encoder, the I3D (random weights, same cost) and the bits/dim forward
are timed at tokenize/eval batch sizes and precisions. From these, `predicted_hours` per stage on this device:
train = max_steps x accumulate_grad_batches x step time; tokenize = clips / encode rate; sample = FVD videos
(eval.n_real x eval.n_trials) / batch x batch time; fvd_real_stats and evaluate = I3D (+ decoding and bits/dim
over the test split) at the measured rates; clip counts per preset in CLIPS (approximate, see there).
Prints one JSON object; exits with status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import statistics
import sys
import time

import numpy as np
import torch

from bench.common import emit, log, moving_digit_clips
from bench.gpu_memory import PRESETS, preset_models
from videogpt.metrics.i3d import I3D
from videogpt.prior import Prior, PriorConfig
from videogpt.sampling import sample_tokens
from videogpt.video import to_float
from videogpt.vqvae import VQVAE, VQVAEConfig

# Dense (no sparsity) bf16 tensor-core peaks from the datasheets, FLOP/s. Matched by substring of the device name,
# first match wins (so the more specific names come first).
BF16_PEAKS = [
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
    ("A10G", 70e12), ("A10", 125e12), ("RTX 4090", 165e12), ("RTX 6000 Ada", 364e12),
]
LOSS_RTOL_SAME_WEIGHTS = 0.02
LOSS_RTOL_AFTER_TRAINING = 0.15  # the VQ-VAE's dead-code restarts amplify rounding differences
COMPARE_BATCH = 2  # items per batch of the bf16 / float32 comparison
LOSS_FALL = 0.95  # a model that cannot learn (frozen, NaN-skipped, uniform tokens) stays within ~1%
# Clips per split (train, test) as the presets cut them. UCF-101 split 1: 9,537 / 3,783 videos of ~186 frames at
# 25 fps, back-to-back 16-frame clips: ~11 per video. BAIR: one clip per trajectory (43,264 / 256). Moving MNIST:
# 9,000 / 1,000 sequences, one clip each.
CLIPS = {"ucf101": (105_000, 41_600), "bair": (43_264, 256), "moving_mnist": (9_000, 1_000)}
TINY_VQVAE = VQVAEConfig(input_shape=(4, 16, 16), n_hiddens=16, res_hiddens=8, n_res_layers=1, downsample=(2, 2, 2),
                         n_codes=32, embedding_dim=8)
TINY_PRIOR = dict(n_layer=2, n_head=2, n_embd=24, resnet_dim=16, resnet_width=8)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device):
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 3) if device.type == "cuda" else None


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


def software(device: torch.device) -> dict:
    out = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        out["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return out


def sdpa_backend(cfg: PriorConfig, batch: int, device: torch.device) -> str:
    """The fused SDPA kernel PyTorch picks for the prior's causal self-attention at its training shape (bf16)."""
    d = cfg.n_embd // cfg.n_head
    q = torch.empty(batch, cfg.n_head, cfg.seq_len, d, device=device, dtype=torch.bfloat16)
    try:
        choice = torch._fused_sdp_choice(q, q, q, None, cfg.attn_dropout, True)
        return torch.nn.attention.SDPBackend(choice).name
    except (RuntimeError, AttributeError, ValueError) as e:  # a private API: report rather than fail
        return f"unknown ({type(e).__name__}: {e})"


def timed(fn, device, runs: int, warmup: int) -> list[float]:
    """Seconds of each of `runs` calls of fn after `warmup` untimed ones (device synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# --------------------------------------------------------------------------------------------
# Training


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


def bench_model(name, model, loss_fn, make_opt, batches, small, items_per_step, flops_per_step, peak, device,
                args) -> dict:
    """bf16 against float32 from the same initialisation on `small` batches (COMPARE_BATCH items: float32
    activations of a preset batch need twice bf16's memory): the loss on the same weights and after the same
    steps. Then bf16 training at the preset's batch, timed: median step, throughput, MFU, peak memory, and
    whether its loss falls. Leaves the model with the weights of that bf16 run."""
    out = {"params": sum(p.numel() for p in model.parameters()), "items_per_step": items_per_step,
           "model_gflops_per_step": round(flops_per_step / 1e9, 3)}
    init = copy.deepcopy(model.state_dict())

    def fresh(bf16, data):
        model.load_state_dict(init)
        model.train()
        torch.manual_seed(1)  # the same dropout stream for both precisions
        return train_loop(model, loss_fn, make_opt(model), data, bf16, device)

    model.eval()
    with torch.no_grad():
        same = {}
        for prec, bf16 in (("fp32", False), ("bf16", True)):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                same[prec] = loss_fn(model, small[0]).item()
    out["same_weights_loss"] = {**same, "rel_diff": round(rel(same["bf16"], same["fp32"]), 5),
                                "tolerance": LOSS_RTOL_SAME_WEIGHTS,
                                "ok": rel(same["bf16"], same["fp32"]) <= LOSS_RTOL_SAME_WEIGHTS}
    last = {}
    for prec, bf16 in (("fp32", False), ("bf16", True)):
        step, losses = fresh(bf16, small)
        for _ in range(args.warmup + args.steps):
            step()
        last[prec] = float(np.mean([x.item() for x in losses[-3:]]))
    out["after_training_loss"] = {"steps": args.warmup + args.steps, "batch": COMPARE_BATCH, "of": "last 3 losses",
                                  **last,
                                  "rel_diff": round(rel(last["bf16"], last["fp32"]), 5),
                                  "tolerance": LOSS_RTOL_AFTER_TRAINING,
                                  "ok": rel(last["bf16"], last["fp32"]) <= LOSS_RTOL_AFTER_TRAINING}

    step, losses = fresh(True, batches)
    reset_memory(device)
    times = timed(step, device, args.steps, args.warmup)
    t = statistics.median(times)
    vals = [x.item() for x in losses]
    out["bf16"] = {"step_s_median": round(t, 5), "step_s_min": round(min(times), 5), "timed_steps": len(times),
                   "items_per_s": round(items_per_step / t, 2),
                   "model_tflops": float(f"{flops_per_step / t / 1e12:.4g}"),
                   "mfu_vs_bf16_peak": round(flops_per_step / t / peak["bf16_peak_flops"], 4),
                   "peak_memory_gb": peak_memory_gb(device)}
    log(f"{name} bf16: {out['bf16']}")
    out["bf16_loss_falls"] = {"first": round(vals[0], 5), "last3_mean": round(float(np.mean(vals[-3:])), 5),
                              "ratio_at_most": LOSS_FALL, "ok": float(np.mean(vals[-3:])) <= LOSS_FALL * vals[0]}
    return out


def clips_for(vq: VQVAEConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n moving-digit clips at the VQ-VAE's input shape: float (n, 3, T, H, W), labels (n,)."""
    T, H, _ = vq.input_shape
    pairs = list(moving_digit_clips(n, T, H))
    return to_float(np.stack([c for _, c in pairs])), torch.tensor([label for label, _ in pairs])


def vqvae_section(vq, batch, lr, ckpt, clips, peak, device, args):
    torch.manual_seed(0)
    model = VQVAE(vq).to(device)
    model.set_activation_checkpointing(ckpt)
    batches = [clips[i:i + batch].to(device) for i in range(0, len(clips), batch)]
    small = [b[:COMPARE_BATCH] for b in batches]
    with torch.no_grad():  # the data-dependent codebook initialisation, once, in float32
        model.train()(batches[0])
    flops = model.flops_per_clip(backward=True) * batch
    out = bench_model("vqvae", model, lambda m, x: m(x)["loss"], lambda m: torch.optim.Adam(m.parameters(), lr=lr),
                      batches, small, batch, flops, peak, device, args)
    return out, model


def executed_flops_per_token(prior: Prior) -> float:
    """Prior.flops_per_token less the half of the causal score matrix the kernels skip."""
    cfg = prior.config
    return prior.flops_per_token() - 2 * cfg.n_layer * cfg.seq_len * cfg.n_embd


def prior_batch(cfg: PriorConfig, tokens, frames, labels, device) -> dict:
    return {"tokens": tokens.to(device), "frames": frames.to(device) if cfg.uses_frames else None,
            "label": labels.to(device) if cfg.condition == "class" else None}


def prior_section(cfg, batch, lr, ckpt, data, peak, device, args):
    torch.manual_seed(0)
    prior = Prior(cfg, data["codebook"]).to(device)
    torch.nn.init.normal_(prior.head.weight, std=0.02)  # not the zero head: a first loss that is not exactly ln K
    prior.set_activation_checkpointing(ckpt)
    n = len(data["tokens"])
    batches = [prior_batch(cfg, data["tokens"][i:i + batch], data["frames"][i:i + batch], data["labels"][i:i + batch],
                           device) for i in range(0, n, batch)]
    small = [{k: v[:COMPARE_BATCH] if v is not None else None for k, v in b.items()} for b in batches]
    full = 3 * prior.flops_per_token() * batch * cfg.seq_len
    flops = 3 * executed_flops_per_token(prior) * batch * cfg.seq_len
    out = bench_model("prior", prior, lambda m, b: m.loss(b["tokens"], label=b["label"], frames=b["frames"]),
                      lambda m: torch.optim.AdamW(m.parameters(), lr=lr), batches, small, batch * cfg.seq_len, flops,
                      peak, device, args)
    out["model_gflops_per_step_full_attention"] = round(full / 1e9, 3)
    out["sdpa_backend"] = sdpa_backend(cfg, batch, device)
    return out, prior


# --------------------------------------------------------------------------------------------
# Inference


def sampler_section(prior: Prior, data, batch: int, device) -> dict:
    """The cached sampler over every position of one batch, after a warm-up batch; greedy tokens against the
    full forward pass."""
    prior.eval()
    cfg = prior.config
    cond = {k: v for k, v in (("frames", data["frames"][:batch] if cfg.uses_frames else None),
                              ("label", data["labels"][:batch] if cfg.condition == "class" else None)) if v is not None}
    cond = {k: v.to(device) for k, v in cond.items()}

    def run(temperature=1.0):
        return sample_tokens(prior, batch, temperature=temperature, seed=0, batch_size=batch, **cond)
    times = timed(run, device, runs=1, warmup=1)
    greedy = run(0.0).to(device)
    with torch.no_grad():
        again = prior(greedy, label=cond.get("label"), frames=cond.get("frames")).argmax(-1)
    return {"batch": batch, "positions": cfg.seq_len, "batch_s": round(times[0], 3),
            "ms_per_position": round(times[0] / cfg.seq_len * 1e3, 3),
            "greedy_equals_forward": bool(torch.equal(again, greedy))}


def inference_rates(params, vqvae: VQVAE, prior: Prior, clips, data, device, args) -> dict:
    """Clips/s of the encoder (tokenize), of decoding, of the I3D (eval); grids/s of the bits/dim forward."""
    from videogpt.distributed import inference_autocast
    vqvae.eval()
    prior.eval()
    tb, eb = params.tokenize.batch_size, params.eval.batch_size
    x = clips[:min(tb, len(clips))].to(device)
    codes = data["tokens"][:eb].to(device)
    i3d = I3D().to(device).eval()
    T = max(vqvae.config.input_shape[0], 10)
    video = torch.rand(min(eb, 2 if args.tiny else eb), 3, T, 224, 224, device=device) * 2 - 1
    batch = prior_batch(prior.config, data["tokens"][:eb], data["frames"][:eb], data["labels"][:eb], device)

    def rate(fn, items, precision):
        with torch.inference_mode(), inference_autocast(device, precision):
            return items / statistics.median(timed(fn, device, runs=3, warmup=1))
    return {"encode_clips_per_s": rate(lambda: vqvae.encode(x), len(x), params.tokenize.precision),
            "decode_clips_per_s": rate(lambda: vqvae.decode(codes), len(codes), "32"),
            "i3d_clips_per_s": rate(lambda: i3d(video), len(video), params.eval.precision),
            "bits_per_dim_grids_per_s": rate(lambda: prior.loss(batch["tokens"], label=batch["label"],
                                                                frames=batch["frames"]), len(batch["tokens"]),
                                                     params.eval.precision)}


def predicted_hours(name: str, params, vq_out, pr_out, sampler, rates) -> dict:
    """Wall time per stage on this device (one GPU) from the measured rates; see the module docstring."""
    n_train, n_test = CLIPS.get(name, CLIPS["moving_mnist"])
    k = params.trainer.accumulate_grad_batches
    n_fvd = params.eval.n_real * params.eval.n_trials
    i3d = rates["i3d_clips_per_s"]
    seconds = {
        "train_vqvae": params.vqvae.max_steps * k * vq_out["bf16"]["step_s_median"],
        "tokenize": (n_train + n_test) / rates["encode_clips_per_s"],
        "train_prior": params.prior.max_steps * k * pr_out["bf16"]["step_s_median"],
        "fvd_real_stats": n_fvd / i3d,
        "sample": math.ceil(n_fvd / sampler["batch"]) * sampler["batch_s"] + n_fvd / rates["decode_clips_per_s"],
        "evaluate": n_test / rates["bits_per_dim_grids_per_s"] + 2 * n_fvd / i3d
        + n_fvd * (1 / rates["decode_clips_per_s"] + 1 / rates["encode_clips_per_s"]),
    }
    return {stage: round(s / 3600, 2) for stage, s in seconds.items()} | {
        "clips_train_test": [n_train, n_test], "total": round(sum(seconds.values()) / 3600, 1)}


def preset_section(name: str, peak, device, args) -> tuple[dict, dict]:
    params, vq, prior_cfg = preset_models("moving_mnist" if args.tiny else name)
    if args.tiny:
        vq = TINY_VQVAE
        prior_cfg = PriorConfig(**{**vars(prior_cfg), **TINY_PRIOR, "latent_shape": vq.latent_shape,
                                   "n_codes": vq.n_codes, "embedding_dim": vq.embedding_dim,
                                   "frame_shape": vq.input_shape[1:]})
        params = dataclasses.replace(params, tokenize=dataclasses.replace(params.tokenize, batch_size=2),
                                     eval=dataclasses.replace(params.eval, batch_size=2),
                                     sample=dataclasses.replace(params.sample, batch_size=2))
    ckpt = params.trainer.checkpoint_activations
    vb = args.vqvae_batch or (2 if args.tiny else params.vqvae.batch_size)
    pb = args.prior_batch or (2 if args.tiny else params.prior.batch_size)
    n = 4 * max(vb, pb)  # four distinct batches, cycled
    clips, labels = clips_for(vq, n)
    vq_out, vqvae = vqvae_section(vq, vb, params.vqvae.lr, ckpt, clips, peak, device, args)
    vqvae.eval()
    with torch.no_grad():
        tokens = torch.cat([vqvae.encode(clips[i:i + vb].to(device)).cpu() for i in range(0, n, vb)])
    data = {"tokens": tokens, "labels": labels % max(prior_cfg.n_classes, 1),
            "frames": clips[:, :, :prior_cfg.n_cond_frames], "codebook": vqvae.codebook.embeddings.detach().cpu()}
    pr_out, prior = prior_section(prior_cfg, pb, params.prior.lr, ckpt, data, peak, device, args)
    sampler = sampler_section(prior, data, args.sampler_batch or params.sample.batch_size, device)
    log(f"{name} sampler: {sampler}")
    rates = {k: round(v, 3) for k, v in inference_rates(params, vqvae, prior, clips, data, device, args).items()}
    section = {"settings": {"vqvae.batch_size": vb, "prior.batch_size": pb, "trainer.checkpoint_activations": ckpt,
                            "trainer.accumulate_grad_batches": params.trainer.accumulate_grad_batches},
               "vqvae_config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(vq).items()},
               "prior_config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(prior_cfg).items()},
               "distinct_codes_in_data": int(tokens.unique().numel()),
               "vqvae": vq_out, "prior": pr_out, "sampler": sampler, "inference": rates,
               "predicted_hours": predicted_hours(name, params, vq_out, pr_out, sampler, rates)}
    checks = {f"{m}_{c}": section[m][key]["ok"] for m in ("vqvae", "prior")
              for c, key in (("bf16_same_weights", "same_weights_loss"), ("bf16_after_training", "after_training_loss"),
                             ("bf16_loss_falls", "bf16_loss_falls"))}
    checks["sampler_greedy_equals_forward"] = sampler["greedy_equals_forward"]
    return section, checks


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", nargs="*", default=None, help="presets to run (default: every params/presets/*.yaml)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per precision")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--vqvae-batch", type=int, default=None, help="default: the preset's vqvae.batch_size (tiny: 2)")
    ap.add_argument("--prior-batch", type=int, default=None, help="default: the preset's prior.batch_size (tiny: 2)")
    ap.add_argument("--sampler-batch", type=int, default=None, help="default: the preset's sample.batch_size")
    ap.add_argument("--tiny", action="store_true", help="tiny models at the Moving MNIST preset's params (CPU test)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.gpu: no CUDA device; pass --device cpu --tiny to run the CPU check")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the float32 runs are true float32
        torch.backends.cudnn.allow_tf32 = False
    names = ["tiny"] if args.tiny else (args.preset or sorted(p.stem for p in PRESETS.glob("*.yaml")))
    peak = device_peak(device, args.tiny)
    log(f"peak: {peak}")
    result = {"bench": "gpu", "tiny": args.tiny, "peak": peak, "software": software(device), "presets": {}}
    checks = {}
    # On CPUs, oneDNN's bf16 conv3d weight gradient reads uninitialised memory in torch 2.13 (values up to 1e34
    # or inf, different on every call, even on one thread); PyTorch's own kernels are exact and repeatable.
    with torch.backends.mkldnn.flags(enabled=device.type != "cpu"):
        for name in names:
            result["presets"][name], preset_checks = preset_section(name, peak, device, args)
            checks |= {f"{name}_{k}": v for k, v in preset_checks.items()}
    result["checks"] = checks
    result["ok"] = all(checks.values())
    out = emit(result)
    if not result["ok"]:
        log(f"FAILED checks: {[k for k, v in checks.items() if not v]}")
        sys.exit(1)
    return out


if __name__ == "__main__":
    main()
