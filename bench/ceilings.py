"""Where the time goes in the two rows of issue 16 whose targets this CPU does not reach, and how far the
hardware would let them go: the sampler at batch 4 and the VQ-VAE training step, at bench.reference_configs's
configs (the reference implementation's own).

    python -m bench.ceilings [--threads 2] [--quick]

Sampler (sample_tokens, 1,024 positions of a 4 x 252 prior, at batch 4 (issues 16 and 24's row), 1 and 32
(`sampler_b{n}`), and at batch 4 with a bfloat16 key/value cache (sample.kv_dtype, `sampler_b4_kv_bfloat16`: its
floor counts the cache's bytes in bfloat16); batches up to videogpt.sampling.ONE_THREAD_MAX_BATCH decode on one
thread, larger ones on all), eager (sample.compile false, `eager_ms_per_position`) and compiled (true,
`ms_per_position`; its compile, the first call, is `compile_s`, not in the timing):
- `profile`: self time per position of each operation or generated kernel of the compiled step (torch.profiler;
  Inductor's kernels named by what they fuse), largest first;
- `bytes_per_step` (videogpt.sampling.decode_bytes_per_step): what one step must read whatever the kernels: every
  decode weight once, and the keys and values of the filled prefix (on average half the sequence), in the cache's
  dtype;
- `stream_gbps`: this machine's measured read bandwidth over a buffer of that size, on the decode loop's thread
  count (torch.sum): the best of `stream_gbps_samples`, one taken just before each timed compiled run
  (`runs_ms_per_position`, of which `ms_per_position` is the best), so that both bests come from the same
  minutes of this shared machine;
- `floor_ms_per_position` = bytes / bandwidth: no kernel that reads its operands can be faster;
  `measured_over_floor` is the compiled step's ratio to it (issue 24's bar: <= 2.5 at batch 4). A buffer of one
  step's bytes can sit partly in the last-level cache when read over and over, as torch.sum does; the decode loop
  also reads the whole key/value cache as it fills (up to twice the mean) besides the weights, so at late positions
  its working set outgrows that cache. Hence also `dram_gbps`, the bandwidth over a 256 MB buffer (memory, not
  cache), and `floor_dram_ms_per_position`, the same bytes at that rate.

VQ-VAE train step (batch 4 of 16x64x64): `conv_share` is the share of the step's self time spent in oneDNN /
PyTorch 3D convolution kernels (forward and backward), which the reference calls too, with the same shapes.
`ceiling_vs_conv_only` = step time / conv time: the speed-up over this code if everything but the convolutions
cost nothing, an upper bound on any ratio to the reference that does not change the convolutions.
Prints one JSON object.
"""
from __future__ import annotations

import time

import torch

from bench.common import emit, loadavg, log, parser, profile_top, set_threads, time_runs
from bench.reference_configs import PRIOR_REF, VQVAE_REF, vqvae_train_step
from videogpt.prior import Prior, PriorConfig
from videogpt import sampling as sampling_module
from videogpt.sampling import DTYPES, decode_bytes_per_step, decode_weight_bytes, sample_tokens

SAMPLER_BATCHES = (4, 1, 32)  # 4: issue 16's row; 1: pure latency; 32: about the sample stage's batch
CONV_OPS = ("convolution", "conv_transpose", "mkldnn_convolution", "convolution_backward")


def stream_gbps(n_bytes: int, repeats: int = 20) -> float:
    """Read bandwidth (GB/s) of torch.sum over a float32 buffer of n_bytes, on the current thread count."""
    x = torch.rand(max(1, n_bytes // 4))
    x.sum()
    t0 = time.perf_counter()
    for _ in range(repeats):
        x.sum()
    return n_bytes * repeats / (time.perf_counter() - t0) / 1e9


def sampler(batch: int = 4, runs: int = 2, kv_dtype: str = "float32") -> dict:
    torch.manual_seed(0)
    cfg = PriorConfig(**{**PRIOR_REF, "n_codes": VQVAE_REF.n_codes, "embedding_dim": VQVAE_REF.embedding_dim})
    prior = Prior(cfg, torch.randn(cfg.n_codes, cfg.embedding_dim))
    torch.nn.init.normal_(prior.head.weight, std=0.02)

    def run(compile: bool):
        return lambda: sample_tokens(prior, batch, seed=0, batch_size=batch, compile=compile, kv_dtype=kv_dtype)
    eager_ms = 1e3 * min(time_runs(run(False), runs=runs)) / cfg.seq_len
    t0 = time.perf_counter()
    run(True)()  # compiles
    compile_s = time.perf_counter() - t0
    weights = decode_weight_bytes(prior)
    kv_mean = decode_bytes_per_step(prior, batch, DTYPES[kv_dtype]) - weights
    # Each timed compiled run right after a stream sample, so that the step's best and the stream's best come
    # from the same minutes (this shared machine's speed moves by up to 2x within minutes).
    # The streams run on the decode loop's thread count at this batch (sampling's own rule for it).
    cpu = torch.device("cpu")
    compiled_s, stream_samples = [], []
    for _ in range(runs):
        with sampling_module._decode_threads(batch, cpu):
            stream_samples.append(stream_gbps(int(weights + kv_mean)))
        compiled_s += time_runs(run(True), warmup=0, runs=1)
    ms = 1e3 * min(compiled_s) / cfg.seq_len
    compile_s -= ms * cfg.seq_len / 1e3
    gbps = max(stream_samples)
    with sampling_module._decode_threads(batch, cpu):
        dram_gbps = stream_gbps(256 * 2 ** 20, repeats=5)
        threads = torch.get_num_threads()
    floor = (weights + kv_mean) / (gbps * 1e9) * 1e3
    floor_dram = (weights + kv_mean) / (dram_gbps * 1e9) * 1e3
    profile = profile_top(run(True), steps=1, top=10)
    for row in profile:
        row["self_us_per_position"] = round(row.pop("self_ms_per_step") * 1e3 / cfg.seq_len, 1)
    return {"batch": batch, "kv_dtype": kv_dtype, "threads": threads, "ms_per_position": round(ms, 3),
            "runs_ms_per_position": [round(1e3 * t / cfg.seq_len, 3) for t in compiled_s],
            "stream_gbps_samples": [round(g, 1) for g in stream_samples],
            "eager_ms_per_position": round(eager_ms, 3), "compile_s": round(compile_s, 1),
            "bytes_per_step": {"weights": int(weights), "kv_mean": int(kv_mean)}, "stream_gbps": round(gbps, 1),
            "floor_ms_per_position": round(floor, 3), "measured_over_floor": round(ms / floor, 2),
            "dram_gbps": round(dram_gbps, 1), "floor_dram_ms_per_position": round(floor_dram, 3),
            "measured_over_dram_floor": round(ms / floor_dram, 2), "eager_over_floor": round(eager_ms / floor, 2),
            "profile": profile}


def vqvae_train(runs: int = 2) -> dict:
    step, _ = vqvae_train_step(False)
    seconds = min(time_runs(step, runs=runs))
    profile = profile_top(step, steps=1, top=200)
    conv = sum(r["pct"] for r in profile if any(r["op"].endswith(op) for op in CONV_OPS))
    return {"s_per_step": round(seconds, 4), "conv_share": round(conv / 100, 3),
            "ceiling_vs_conv_only": round(100 / max(conv, 1e-9), 2), "profile": profile[:10]}


def main(argv=None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.set_defaults(threads=2)
    ap.add_argument("--batches", default=",".join(map(str, SAMPLER_BATCHES)), help="sampler batch sizes")
    ap.add_argument("--bf16-cache-batches", default="4", help="sampler batch sizes with a bfloat16 cache ('' none)")
    ap.add_argument("--no-vqvae", action="store_true", help="the sampler rows only")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    runs = 1 if args.quick else 2
    out = {"bench": "ceilings", "threads": threads, "loadavg_before": loadavg()}
    torch._inductor.config.cpp.enable_kernel_profile = True  # the profile names the compiled step's kernels
    rows = [(int(b), "float32", f"sampler_b{b}") for b in args.batches.split(",") if b]
    rows += [(int(b), "bfloat16", f"sampler_b{b}_kv_bfloat16") for b in args.bf16_cache_batches.split(",") if b]
    for batch, kv_dtype, key in rows:
        smp = out[key] = sampler(batch, 1 if args.quick else 3, kv_dtype)
        log(f"{key}: compiled {smp['ms_per_position']} ms/position (eager {smp['eager_ms_per_position']}), "
            f"floor {smp['floor_ms_per_position']}: {smp['measured_over_floor']}x")
    if not args.no_vqvae:
        out["vqvae_train"] = vqvae_train(runs)
        log(f"vqvae: conv share {out['vqvae_train']['conv_share']}")
    out["loadavg_after"] = loadavg()
    return emit(out)


if __name__ == "__main__":
    main()
