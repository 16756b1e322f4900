"""I3D throughput for FVD: clips/s of uint8 clips (default 16 frames, 64x64, resized to 224) -> (N, 400).

Times the whole `i3d_features` path (preprocessing + resize + forward) on a randomly initialised I3D (same
cost as the real weights). Prints one JSON object: median clips/s over --runs timed runs after --warmup.

    OMP_NUM_THREADS=1 python -m bench.i3d --batch-size 2
    python -m bench.i3d --device cuda --batch-size 16
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from videogpt.metrics.i3d import I3D, i3d_features
from videogpt.metrics.protocol import FLAVOURS, protocol


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--n-batches", type=int, default=1, help="batches per timed run")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=64, help="input frame size before the resize to 224")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--protocol", default="tf", choices=FLAVOURS, help="I3D protocol flavour (its resize)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = I3D(flavour=args.protocol).eval().to(device)
    n = args.batch_size * args.n_batches
    videos = np.random.default_rng(0).integers(0, 256, (n, args.frames, args.size, args.size, 3), dtype=np.uint8)

    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        feats = i3d_features(model, videos, batch_size=args.batch_size, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert feats.shape == (n, 400)
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        run()
    times = [run() for _ in range(args.runs)]
    med = statistics.median(times)
    result = {
        "bench": "i3d_features",
        "clips_per_s": round(n / med, 3),
        "median_s_per_run": round(med, 4),
        "run_times_s": [round(t, 4) for t in times],
        "config": {
            "batch_size": args.batch_size, "clips_per_run": n, "frames": args.frames,
            "input_size": args.size, "i3d_protocol": args.protocol,
            "resize": protocol(args.protocol)["resize"], "runs": args.runs, "warmup": args.warmup,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__, "python": platform.python_version(),
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
