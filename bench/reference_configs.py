"""The project's side of issue 16's table: every row at exactly the reference implementation's (wilson1yan/VideoGPT)
configs, timed in one process, with the reference's figures recorded next to them for the ratio.

    python -m bench.reference_configs [--threads 2] [--rows vqvae_train,...] [--runs N] [--quick] [--profile]

Rows (the recorded reference figures: an AVX-512 EPYC, 2 threads, quiet machine):
- vqvae_train: 64 channels, 2 res blocks, downsample (4,4,4), 512 codes x 64, attention on, batch 4 of 16x64x64,
  forward + backward + clip_grad_norm_(1.0) + Adam (what train_vqvae does per step). Reference 0.337 s.
- vqvae_encode: the same model, VQVAE.encode of 8 clips in eval mode under inference_mode. Reference 0.120 s.
- prior_train: 252 wide, 4 heads, 4 layers, 4x16x16 latent, 512 codes (x 64), batch 4, dropout 0.2, attention
  dropout 0.3, forward + backward + clip + AdamW + LR schedule (what train_prior does). Reference 4.43 s.
- prior_train_no_attn_dropout: the same with attention dropout 0 (the project's default). Reference 4.43 s.
- sample_b4: `sample` (sample_tokens over all 1,024 positions + VQ-VAE decode) of 4 videos with that prior and
  VQ-VAE, time per position. Reference 5.27 ms/position. sample_b1 / sample_b16: batch 1 and 16 (no reference).
Rows ending in _bf16 run the same step under torch.autocast("cpu", bfloat16) (trainer.precision=bf16-mixed); they are
skipped (and say so) on CPUs without native bf16 kernels, where bf16 is 5-20x slower than float32 (AVX2-only hosts).
The sampler decodes batches of up to videogpt.sampling.ONE_THREAD_MAX_BATCH sequences on one thread (its matmuls
are a few rows each); rows ending in _all_threads switch that off, to check the choice on another machine.

ratio = reference time / project time (> 1: the project is faster). With `--reference PATH` (a checkout of the
reference) the reference's side of each row runs here too, its timed calls alternating with the project's
(bench/reference_side.py), so the ratio is measured on this machine; without it, the ratio is against the recorded
figures of issue 16 (REFERENCE), which came from an AVX-512 host. Times are the minimum and the median over
`runs` timed calls after one untimed warm-up; the ratio uses the medians. The models are randomly initialised
(speed does not depend on the weights); inputs are moving-digit clips and random token grids. Prints one JSON
object.
"""
from __future__ import annotations

import statistics
import time

import torch

from bench.common import (NO_BF16, emit, loadavg, log, moving_digit_clips, native_bf16, parser, profile_top,
                          set_threads)
from videogpt.lightning import PriorModule
from videogpt.prior import Prior, PriorConfig
from videogpt import sampling as sampling_module
from videogpt.sampling import sample
from videogpt.vqvae import VQVAE, VQVAEConfig

# The reference implementation's configs (its residual blocks use n_hiddens // 2 channels, 2 attention heads).
VQVAE_REF = VQVAEConfig(input_shape=(16, 64, 64), n_hiddens=64, res_hiddens=32, n_res_layers=2,
                        downsample=(4, 4, 4), n_codes=512, embedding_dim=64, attention=True, n_heads=2)
PRIOR_REF = dict(latent_shape=(4, 16, 16), n_codes=512, embedding_dim=64, n_layer=4, n_head=4, n_embd=252,
                 dropout=0.2, attn_dropout=0.3)
VQVAE_TRAIN_BATCH, VQVAE_ENCODE_BATCH, PRIOR_BATCH = 4, 8, 4
VQVAE_LR, PRIOR_LR = 3e-4, 3e-4

# Seconds per step (sampling: seconds per position), measured for the reference on this machine kind (issue 16).
REFERENCE = {"vqvae_train": 0.337, "vqvae_encode": 0.120, "prior_train": 4.43, "prior_train_no_attn_dropout": 4.43,
             "sample_b4": 5.27e-3}
# Rows bench.reference_side can time on the reference itself (--reference).
REFERENCE_ROWS = ("vqvae_train", "vqvae_encode", "prior_train", "prior_train_no_attn_dropout", "sample_b1", "sample_b4",
                  "sample_b16", "sample_b32")
_VQ = "VQ-VAE 64 ch, 2 res blocks, downsample 4x4x4, 512 x 64 codes, 16x64x64 clips"
_PRIOR = "prior 4 layers x 252, 4 heads, 4x16x16 latent, 512 codes, dropout 0.2"
DESCRIPTIONS = {
    "vqvae_train": f"{_VQ}, train step (fwd+bwd+Adam), batch 4",
    "vqvae_encode": f"{_VQ}, encode, batch 8",
    "prior_train": f"{_PRIOR}, attn dropout 0.3, train step (fwd+bwd+AdamW), batch 4",
    "prior_train_no_attn_dropout": f"{_PRIOR}, attn dropout 0, train step (fwd+bwd+AdamW), batch 4",
    **{f"sample_b{b}": f"{_PRIOR}: sample {b} videos (1,024 positions + VQ-VAE decode)" for b in (1, 4, 16, 32)},
}


def describe(row: str) -> str:
    base = row.removesuffix("_bf16").removesuffix("_all_threads")
    return (DESCRIPTIONS[base] + (", bf16 autocast" if row.endswith("_bf16") else "")
            + (", decoding on all threads" if row.endswith("_all_threads") else ""))
ROWS = ("vqvae_train", "vqvae_encode", "prior_train", "prior_train_no_attn_dropout", "sample_b4", "sample_b1",
        "sample_b16", "sample_b4_all_threads", "vqvae_train_bf16", "vqvae_encode_bf16", "prior_train_bf16")


def clips(batch: int) -> torch.Tensor:
    """(B, 3, 16, 64, 64) float moving-digit clips in [-0.5, 0.5]."""
    T, H, _ = VQVAE_REF.input_shape
    x = torch.stack([torch.from_numpy(c) for _, c in moving_digit_clips(batch, T, H)])
    return x.permute(0, 4, 1, 2, 3).float().div(255).sub(0.5).contiguous()


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def vqvae_train_step(bf16: bool):
    torch.manual_seed(0)
    model = VQVAE(VQVAE_REF).train()
    opt = torch.optim.Adam(model.parameters(), lr=VQVAE_LR)
    x = clips(VQVAE_TRAIN_BATCH)

    def step():
        with autocast(bf16):
            loss = model(x)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, 1


def vqvae_encode(bf16: bool):
    torch.manual_seed(0)
    model = VQVAE(VQVAE_REF).eval()
    x = clips(VQVAE_ENCODE_BATCH)

    def step():
        with torch.inference_mode(), autocast(bf16):
            model.encode(x)
    return step, 1


def prior_train_step(attn_dropout: float, bf16: bool):
    torch.manual_seed(0)
    cfg = PriorConfig(**{**PRIOR_REF, "attn_dropout": attn_dropout})
    prior = Prior(cfg, torch.randn(cfg.n_codes, cfg.embedding_dim)).train()
    module = PriorModule(prior, lr=PRIOR_LR, weight_decay=0.0, warmup_steps=0, max_steps=100_000)
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    tokens = torch.randint(0, cfg.n_codes, (PRIOR_BATCH, *cfg.latent_shape), generator=torch.Generator().manual_seed(0))

    def step():
        with autocast(bf16):
            loss = prior.loss(tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return step, 1


def sampling(batch: int, all_threads: bool = False, compile="auto"):
    torch.manual_seed(0)
    cfg = PriorConfig(**{**PRIOR_REF, "n_codes": VQVAE_REF.n_codes, "embedding_dim": VQVAE_REF.embedding_dim})
    vqvae = VQVAE(VQVAE_REF).eval()
    prior = Prior(cfg, vqvae.codebook.embeddings)
    torch.nn.init.normal_(prior.head.weight, std=0.02)  # a non-zero head: non-uniform distributions

    def run():
        saved = sampling_module.ONE_THREAD_MAX_BATCH
        sampling_module.ONE_THREAD_MAX_BATCH = 0 if all_threads else saved
        try:
            sample(prior, vqvae, batch, seed=0, batch_size=batch, compile=compile)
        finally:
            sampling_module.ONE_THREAD_MAX_BATCH = saved
    return run, cfg.seq_len  # time per position


def build(row: str):
    bf16 = row.endswith("_bf16")
    base = row.removesuffix("_bf16")
    if base == "vqvae_train":
        return vqvae_train_step(bf16)
    if base == "vqvae_encode":
        return vqvae_encode(bf16)
    if base == "prior_train":
        return prior_train_step(PRIOR_REF["attn_dropout"], bf16)
    if base == "prior_train_no_attn_dropout":
        return prior_train_step(0.0, bf16)
    if base.startswith("sample_b"):
        batch, _, threads = base.removeprefix("sample_b").partition("_")
        return sampling(int(batch), all_threads=threads == "all_threads")
    raise ValueError(f"unknown row {row!r}; expected one of {', '.join(ROWS)}")


def timed(fn, per: int) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / per


def stats(times: list[float]) -> dict:
    return {"median": round(statistics.median(times), 6), "min": round(min(times), 6),
            "times": [round(t, 6) for t in times]}


def time_row(row: str, runs: int, profile: bool = False, reference=None) -> dict:
    """The project's row; with `reference` (bench.reference_side.import_reference's modules) the reference's same
    row too, their timed calls alternating (project, reference, project, ...) so that both see the same machine
    state, and the ratio is measured here. Without it the ratio is against REFERENCE's recorded figures."""
    fn, per = build(row)
    base = row.removesuffix("_bf16").removesuffix("_all_threads")
    ref_fn = None
    if reference is not None and base in REFERENCE_ROWS:
        from bench.reference_side import build as build_reference
        ref_fn, ref_per = build_reference(reference, base)
        ref_fn()  # warm-up
    fn()  # warm-up
    times, ref_times = [], []
    for _ in range(runs):
        times.append(timed(fn, per))
        if ref_fn is not None:
            ref_times.append(timed(ref_fn, ref_per))
    out = {"config": describe(row), "unit": "s/position" if per > 1 else "s/step", **stats(times)}
    if ref_fn is not None:
        measured = stats(ref_times)
        out.update(reference=measured["median"], reference_measured=measured,
                   ratio=round(measured["median"] / out["median"], 2))
    elif base in REFERENCE:
        out.update(reference=REFERENCE[base], reference_source="recorded (issue 16, AVX-512 host)",
                   ratio=round(REFERENCE[base] / out["median"], 2), ratio_best=round(REFERENCE[base] / out["min"], 2))
    if profile:
        out["profile_top_ops"] = profile_top(fn, steps=1, top=15)
    return out


def main(argv=None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.set_defaults(threads=2)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--runs", type=int, default=None, help="timed calls per row (default 3; --quick: 2)")
    ap.add_argument("--profile", action="store_true", help="add each row's top ops (torch.profiler) to the JSON")
    ap.add_argument("--reference", metavar="PATH", default=None,
                    help="a checkout of wilson1yan/VideoGPT: time its side of each row here too, alternating with the "
                         "project's (bench/reference_side.py); without it ratios use the recorded figures")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    runs = args.runs or (2 if args.quick else 3)
    reference = None
    if args.reference:
        from bench.reference_side import import_reference
        reference = import_reference(args.reference)
    results = {}
    for row in args.rows.split(","):
        if row.endswith("_bf16") and not native_bf16():
            results[row] = {"skipped": NO_BF16}
            continue
        load0 = loadavg()
        results[row] = {**time_row(row, runs, args.profile, reference), "loadavg_before_after": [load0, loadavg()]}
        log(f"{row}: {results[row]}")
    headline = {row: {k: r[k] for k in ("median", "unit", "reference", "ratio", "skipped") if k in r}
                for row, r in results.items()}
    return emit({"bench": "reference_configs", "threads": threads, "runs": runs, "headline": headline,
                 "results": results, "configs": {"vqvae": {k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in vars(VQVAE_REF).items()},
                                                 "prior": {k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in PRIOR_REF.items()},
                                                 "vqvae_train_batch": VQVAE_TRAIN_BATCH,
                                                 "vqvae_encode_batch": VQVAE_ENCODE_BATCH,
                                                 "prior_batch": PRIOR_BATCH},
                 "reference": args.reference or "recorded figures (REFERENCE)",
                 "method": "one warm-up call, then `runs` timed calls per row in one process (with --reference the "
                           "project's and the reference's calls alternate); ratio = reference median / project "
                           "median"})


if __name__ == "__main__":
    main()
