"""Peak memory of the data stages at 1x and 4x the data: it must stay flat (streaming, not loading it all).

    python -m bench.memory [--threads N] [--videos 96] [--quick]

Generates moving-digit MP4 videos (128 frames of 64x64 each, so every video yields many clips), then runs,
each in a fresh Python process so the peaks do not mix:
- preprocess: videogpt.data.clip_store.build_clip_store on 1x (a quarter of the videos) and 4x (all);
- tokenize: videogpt.tokens.build_token_store (params.yaml's VQ-VAE, randomly initialised) on the two
  clip stores preprocess produced.
Reported per run: peak RSS of the process (VmHWM), its RSS after imports and before any work (baseline),
their difference (the work's own memory), and the largest peak RSS of its child processes (decoder
workers, ffmpeg). `ratio_4x_1x` compares the peaks. Flat means: peak ratio <= 1.10 AND the work's memory
grew by less than half of what the clip data grew (uint8 bytes, 4x minus 1x) -- the second condition is what
catches a stage that holds all clips, since the interpreter's baseline alone would keep the ratio near 1.
Each child runs with glibc's default malloc settings and again with a fixed mmap threshold (see ENVS);
flatness is judged on the second. Prints one JSON object.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

from bench.common import REPO, children_peak_rss_mb, emit, log, parser, peak_rss_mb, rss_mb

VIDEO_FRAMES = 128
VIDEO_SIZE = 64
FLAT = 1.10
# Every child runs twice: with glibc's default allocator settings (what a stage gets), and with a fixed mmap
# threshold. glibc raises its mmap threshold dynamically after large blocks are freed, so later multi-MB tensors
# come from the heap and the heap keeps up to ~250 MB it cannot return: tokenize's peak RSS then wanders by
# that much from run to run (and is not a function of the data size). With the threshold fixed the peak shows
# the code's own memory; `flat` is judged on that run.
ENVS = {"default": {}, "fixed_mmap_threshold": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}}


# --------------------------------------------------------------------------------------------
# Children (fresh processes)


def child_preprocess(source: str, out: str, workers: int) -> dict:
    from videogpt.config import load
    from videogpt.data.clip_store import build_clip_store
    params = load(REPO / "params.yaml").data
    import dataclasses
    params = dataclasses.replace(params, source=source, split_ratio=None, num_workers=workers)
    base = rss_mb()
    t0 = time.perf_counter()
    summary = build_clip_store(params, Path(out) / "clips.zarr", Path(out) / "manifest.csv",
                               Path(out) / "rejected.csv", progress=False)
    return {"seconds": round(time.perf_counter() - t0, 2), "baseline_rss_mb": round(base, 1),
            "clips": {s: summary.counts[s]["clips"] for s in ("train", "test")},
            "clip_bytes_mb": _clip_mb(summary.counts, params.sequence_length, params.resolution)}


def _clip_mb(counts: dict, T: int, R: int) -> float:
    return round(sum(counts[s]["clips"] if isinstance(counts[s], dict) else counts[s] for s in ("train", "test"))
                 * T * R * R * 3 / 2 ** 20, 2)


def child_tokenize(store: str, out: str, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    from videogpt.config import load
    from videogpt.data.clip_store import store_attrs
    from videogpt.tokens import build_token_store
    from videogpt.vqvae import VQVAE, VQVAEConfig
    params = load(REPO / "params.yaml")
    attrs = store_attrs(store)
    T, R = attrs["sequence_length"], attrs["resolution"]
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig.from_params(params.vqvae, (T, R, R))).eval()
    base = rss_mb()
    t0 = time.perf_counter()
    counts = build_token_store(vqvae, store, Path(out) / "tokens.zarr", fingerprint="bench",
                               batch_size=params.tokenize.batch_size, num_workers=params.tokenize.num_workers,
                               progress=False)
    return {"seconds": round(time.perf_counter() - t0, 2), "baseline_rss_mb": round(base, 1), "clips": counts,
            "clip_bytes_mb": _clip_mb(counts, T, R)}


def run_child(env: dict, *args: str) -> dict:
    """Run this script as `--child ...` in a fresh interpreter (extra environment `env`); return its JSON line."""
    proc = subprocess.run([sys.executable, "-m", "bench.memory", "--child", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env}, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Input videos


def _write_one(job) -> None:
    from videogpt.config import DefaultDataParams
    from videogpt.data.ffmpeg_io import write_mp4
    from videogpt.data.moving_digits import make_video, video_digits
    out, split, index = job
    dp = DefaultDataParams(resolution=VIDEO_SIZE, n_frames=VIDEO_FRAMES)
    digits, rng = video_digits(dp, split, index)
    write_mp4(Path(out) / split / str(digits[0]) / f"{index:05d}.mp4", make_video(digits, dp, rng), dp.fps)


def make_videos(root: Path, n_train: int, n_test: int, workers: int) -> tuple[Path, Path]:
    """4x set: n_train + n_test videos; 1x set: hard links to the first quarter of each split."""
    big, small = root / "videos_4x", root / "videos_1x"
    jobs = [(str(big), "train", i) for i in range(n_train)] + [(str(big), "test", i) for i in range(n_test)]
    with Pool(workers) as pool:
        pool.map(_write_one, jobs, chunksize=4)
    for split, n in (("train", n_train), ("test", n_test)):
        for path in sorted((big / split).rglob("*.mp4")):
            if int(path.stem) < max(1, n // 4):
                dst = small / path.relative_to(big)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, dst)
    return small, big


# --------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        info = child_preprocess(rest[0], rest[1], int(rest[2])) if kind == "preprocess" else \
            child_tokenize(rest[0], rest[1], int(rest[2]))
        info.update(peak_rss_mb=round(peak_rss_mb(), 1), children_peak_rss_mb=round(children_peak_rss_mb(), 1))
        info["work_rss_mb"] = round(info["peak_rss_mb"] - info["baseline_rss_mb"], 1)
        print(json.dumps(info), flush=True)
        return info

    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=96, help="training videos at 4x (test: 1/8 of it)")
    ap.add_argument("--workers", type=int, default=2, help="decoder processes (data.num_workers)")
    args = ap.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.quick:  # not much smaller: the data growth must stay well above the RSS noise
        args.videos = min(args.videos, 64)
    n_train, n_test = args.videos, max(4, args.videos // 8)

    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    try:
        t0 = time.perf_counter()
        sources = dict(zip(("1x", "4x"), make_videos(tmp, n_train, n_test, args.workers)))
        log(f"{n_train + n_test} videos written in {time.perf_counter() - t0:.1f} s")
        results = {"preprocess": {}, "tokenize": {}}
        for env_name, env in ENVS.items():
            for stage in results:
                results[stage][env_name] = {}
            for scale, src in sources.items():
                out = tmp / f"out_{scale}_{env_name}"
                out.mkdir()
                r = results["preprocess"][env_name][scale] = run_child(env, "preprocess", str(src), str(out),
                                                                       str(args.workers))
                log(f"preprocess {scale} ({env_name}): {r}")
                r = results["tokenize"][env_name][scale] = run_child(env, "tokenize", str(out / "clips.zarr"), str(out),
                                                                     str(threads))
                log(f"tokenize {scale} ({env_name}): {r}")
        headline = {}
        for stage, by_env in results.items():
            for env_name, r in by_env.items():
                ratio = r["4x"]["peak_rss_mb"] / r["1x"]["peak_rss_mb"]
                work_growth = r["4x"]["work_rss_mb"] - r["1x"]["work_rss_mb"]
                data_growth = r["4x"]["clip_bytes_mb"] - r["1x"]["clip_bytes_mb"]
                r.update(ratio_4x_1x=round(ratio, 3), work_growth_mb=round(work_growth, 1),
                         data_growth_mb=round(data_growth, 1),
                         flat=bool(ratio <= FLAT and work_growth < 0.5 * data_growth))
            d, f = by_env["default"], by_env["fixed_mmap_threshold"]
            headline[stage] = {"peak_rss_mb_1x": d["1x"]["peak_rss_mb"], "peak_rss_mb_4x": d["4x"]["peak_rss_mb"],
                               "ratio_4x_1x": d["ratio_4x_1x"],
                               "fixed_mmap_threshold_peak_rss_mb_1x": f["1x"]["peak_rss_mb"],
                               "fixed_mmap_threshold_peak_rss_mb_4x": f["4x"]["peak_rss_mb"],
                               "fixed_mmap_threshold_ratio_4x_1x": f["ratio_4x_1x"],
                               "work_growth_mb": f["work_growth_mb"], "data_growth_mb": f["data_growth_mb"],
                               "flat": f["flat"], "flat_default_allocator": d["flat"]}
        return emit({"bench": "memory", "threads": threads, "headline": headline, "results": results,
                     "config": {"videos_4x": [n_train, n_test], "videos_1x": [max(1, n_train // 4), max(1, n_test // 4)],
                                "video_frames": VIDEO_FRAMES, "video_size": VIDEO_SIZE, "decoder_workers": args.workers,
                                "flat_threshold": FLAT, "envs": ENVS},
                     "method": "each stage run in a fresh subprocess; peak = VmHWM of /proc/self/status; children = "
                               "getrusage(RUSAGE_CHILDREN).ru_maxrss (largest decoder worker / ffmpeg)"})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
