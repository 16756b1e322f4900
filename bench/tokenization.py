"""Tokenize throughput: clips/s of videogpt.tokens.build_token_store (read the clip store, encode with the
VQ-VAE, write the token store) on a generated clip store, plus the clip-reading part alone.

    python -m bench.tokenization [--threads N] [--clips 512] [--quick]

(Named tokenization.py, not tokenize.py, so that it can never shadow the standard library's `tokenize`
module, which torch imports via inspect/linecache.)

The clip store has the preprocess stage's exact layout (its SplitWriter) with moving-digit clips of
params.yaml's data.sequence_length x data.resolution^2; the VQ-VAE is params.yaml's, randomly initialised
(same cost as a trained one), batch size and workers from tokenize.*. Prints one JSON object.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch

from bench.common import REPO, emit, loadavg, log, make_clip_store, parser, set_threads, summarize


def main(argv=None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=512, help="clips in the store (train; test gets 1/8 of it)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None, help="default: tokenize.batch_size")
    ap.add_argument("--workers", type=int, default=None, help="default: tokenize.num_workers")
    ap.add_argument("--store", default=None, help="reuse this clip store instead of generating one")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    if args.quick:
        args.clips, args.runs = min(args.clips, 256), min(args.runs, 2)

    from torch.utils.data import DataLoader

    from videogpt.config import load
    from videogpt.data.dataset import ClipDataset
    from videogpt.tokens import build_token_store
    from videogpt.vqvae import VQVAE, VQVAEConfig

    params = load(REPO / "params.yaml")
    d = params.data
    T, R = d.sequence_length, d.resolution
    bs = args.batch_size or params.tokenize.batch_size
    workers = params.tokenize.num_workers if args.workers is None else args.workers
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig.from_params(params.vqvae, (T, R, R))).eval()

    tmp = Path(tempfile.mkdtemp(prefix="bench_tokenize_"))
    try:
        if args.store:
            store = Path(args.store)
        else:
            t0 = time.perf_counter()
            store = make_clip_store(tmp / "clips.zarr", args.clips, max(1, args.clips // 8), T, R)
            log(f"clip store: {args.clips} + {max(1, args.clips // 8)} clips in {time.perf_counter() - t0:.1f} s")
        n = sum(len(ClipDataset(store, s)) for s in ("train", "test"))

        def tokenize():
            build_token_store(vqvae, store, tmp / "tokens.zarr", fingerprint="bench", batch_size=bs,
                              num_workers=workers, progress=False)

        def read_only():
            for split in ("train", "test"):
                for _ in DataLoader(ClipDataset(store, split), batch_size=bs, num_workers=workers):
                    pass

        load0 = loadavg()
        times = []
        read_times = []
        tokenize()  # warm-up (also checks it works)
        for _ in range(args.runs):
            t0 = time.perf_counter()
            tokenize()
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            read_only()
            read_times.append(time.perf_counter() - t0)
        s, r = summarize(times), summarize(read_times)
        cps = n / s["median_s"]
        log(f"tokenize: {cps:.1f} clips/s ({n} clips)")
        return emit({
            "bench": "tokenize", "threads": threads,
            "headline": {"clips_per_s": round(cps, 2), "read_clips_per_s": round(n / r["median_s"], 1),
                         "read_share": round(r["median_s"] / s["median_s"], 3)},
            "config": {"clips": n, "clip_shape": [T, R, R, 3], "batch_size": bs, "num_workers": workers,
                       "vqvae": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(vqvae.config).items()},
                       "runs": args.runs, "warmup": 1},
            "tokenize": s, "read_only": r, "loadavg_before_after": [load0, loadavg()],
            "method": "median wall time of a whole build_token_store call (both splits, temp store + rename); "
                      "read_only = iterating the same DataLoaders over ClipDataset without encoding",
        })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
