"""compute.engine: videos/s of preprocess and clips/s of tokenize on the default data, engine local against a
local Ray of 1 and 2 workers, in one run.

    python -m bench.engine [--runs 2] [--block 64] [--quick]

Inputs: data/default_videos and models/vqvae of the default run (`dvc repro` first). The local Ray (2 CPUs) is
started once and its start-up timed on its own; every timed map includes starting its actors (each imports
torch and unpickles the VQ-VAE) and collecting the results in order. Tokenize blocks are --block clips (the
library's 1,024 would leave the default data's 400 clips in two blocks, one per split: nothing to share).
Prints one JSON object (bench/common.py).
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from bench.common import emit, log, parser, summarize, time_runs
from pipeline import paths
from videogpt import tokens
from videogpt.checkpoint import load_vqvae
from videogpt.config import ComputeParams, load
from videogpt.data.clip_store import build_clip_store, store_attrs
from videogpt.engine import start_local_ray


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--block", type=int, default=64, help="clips per tokenize block (unit of work)")
    args = ap.parse_args()
    if args.quick:
        args.runs = 1
    import ray
    params = load()
    tokens.BLOCK = args.block
    vqvae = load_vqvae(paths.VQVAE_DIR)
    engines = {"local": (ComputeParams(), 1), "local, 2 processes": (ComputeParams(), 2),
               "ray, 1 worker": (ComputeParams("ray", workers=1), 1),
               "ray, 2 workers": (ComputeParams("ray", workers=2), 1)}
    started = time.perf_counter()
    start_local_ray(2)
    ray_start_s = time.perf_counter() - started
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for name, (compute, local_workers) in engines.items():
            log(f"preprocess, {name}")
            data = dataclasses.replace(params.data, num_workers=local_workers)
            pre = time_runs(lambda: build_clip_store(data, out / "clips.zarr", out / "manifest.csv",
                                                     out / "rejected.csv", progress=False, compute=compute),
                            warmup=0, runs=args.runs)
            counts = store_attrs(out / "clips.zarr")["counts"]
            videos = sum(counts[s]["videos"] for s in ("train", "test")) + counts["rejected"]
            clips = sum(counts[s]["clips"] for s in ("train", "test"))
            log(f"tokenize, {name}")
            tok = time_runs(lambda: tokens.build_token_store(vqvae, out / "clips.zarr", out / "tokens.zarr",
                                                              fingerprint="bench",
                                                              batch_size=params.tokenize.batch_size,
                                                              progress=False, compute=compute),
                            warmup=0, runs=args.runs)
            results[name] = {"preprocess_videos_per_s": round(videos / summarize(pre)["median_s"], 1),
                             "tokenize_clips_per_s": round(clips / summarize(tok)["median_s"], 1),
                             "preprocess": summarize(pre), "tokenize": summarize(tok)}
    ray.shutdown()
    emit({"bench": "engine",
          "config": {"data": params.data.source, "videos": videos, "clips": clips, "tokenize_block": args.block,
                     "tokenize_batch": params.tokenize.batch_size, "runs": args.runs, "ray_cpus": 2},
          "ray_start_s": round(ray_start_s, 2), "results": results})


if __name__ == "__main__":
    main()
