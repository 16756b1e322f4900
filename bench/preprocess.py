"""Preprocess throughput: frames/s of the library call (build_clip_store) against a bare ffmpeg
decode + scale + centre crop of the same files, in the same run, and their ratio.

    python -m bench.preprocess [--videos 16] [--frames 64] [--workers 1] [--quick]

The inputs are generated first: 320x240 H.264 (UCF-101's frame size) of testsrc2 + noise, so the decoder
sees realistic entropy. The ratio (library / bare) is the share of raw decode speed the whole stage keeps
after probing, clip cutting, Zarr compression and the CSVs. Prints one JSON object (bench/common.py).
"""
from __future__ import annotations

import multiprocessing
import subprocess
import tempfile
from pathlib import Path

from bench.common import children_peak_rss_mb, emit, log, parser, peak_rss_mb, summarize, time_runs
from videogpt.config import DataParams
from videogpt.data.ffmpeg_io import ffmpeg_exe
from videogpt.data.clip_store import build_clip_store

SOURCE_SIZE = "320x240"
FPS = 25


def make_inputs(root: Path, n_videos: int, n_frames: int) -> list[Path]:
    """Three quarters train, a quarter test, each with its own noise seed."""
    paths = []
    for i in range(n_videos):
        path = root / ("test" if i % 4 == 3 else "train") / f"{i:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={SOURCE_SIZE}:rate={FPS}", "-frames:v", str(n_frames),
                        "-vf", f"noise=alls=25:allf=t+u:all_seed={i}", "-pix_fmt", "yuv420p", str(path)], check=True)
        paths.append(path)
    return paths


def bare_decode(path: Path, resolution: int) -> int:
    """The library's scale + centre-crop chain, straight to a pipe; returns the frame count."""
    out = subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-vf",
                          f"scale={resolution}:{resolution}:force_original_aspect_ratio=increase:flags=area,"
                          f"crop={resolution}:{resolution}", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
                         check=True, capture_output=True).stdout
    return len(out) // (resolution * resolution * 3)


def bare_decode_all(paths: list[Path], resolution: int, workers: int) -> int:
    with multiprocessing.Pool(workers) as pool:
        return sum(pool.starmap(bare_decode, [(p, resolution) for p in paths]))


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--frames", type=int, default=64, help="frames per input video")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--sequence-length", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="data.num_workers, and the bare decoder's pool size")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.videos, args.runs = 8, 2

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log(f"generating {args.videos} videos of {args.frames} frames")
        paths = make_inputs(tmp / "videos", args.videos, args.frames)
        n_frames = bare_decode_all(paths, args.resolution, args.workers)
        params = DataParams(source=str(tmp / "videos"), resolution=args.resolution,
                            sequence_length=args.sequence_length, num_workers=args.workers)
        out = tmp / "out"
        log("timing")
        bare = time_runs(lambda: bare_decode_all(paths, args.resolution, args.workers), runs=args.runs)
        library = time_runs(lambda: build_clip_store(params, out / "clips.zarr", out / "manifest.csv",
                                                     out / "rejected.csv", progress=False), runs=args.runs)
        store_mb = sum(p.stat().st_size for p in (out / "clips.zarr").rglob("*") if p.is_file()) / 2 ** 20

    library_fps = n_frames / summarize(library)["median_s"]
    bare_fps = n_frames / summarize(bare)["median_s"]
    emit({
        "bench": "preprocess",
        "config": {"videos": args.videos, "frames_per_video": args.frames, "source": f"{SOURCE_SIZE} h264 yuv420p "
                   "testsrc2+noise", "resolution": args.resolution, "sequence_length": args.sequence_length,
                   "workers": args.workers, "runs": args.runs, "ffmpeg": Path(ffmpeg_exe()).name},
        "library_frames_per_s": round(library_fps, 1),
        "bare_ffmpeg_frames_per_s": round(bare_fps, 1),
        "ratio": round(library_fps / bare_fps, 3),
        "library": summarize(library), "bare_ffmpeg": summarize(bare),
        "store_mb": round(store_mb, 2),
        "peak_rss_mb": {"main": round(peak_rss_mb(), 1), "largest_child": round(children_peak_rss_mb(), 1)},
    })


if __name__ == "__main__":
    main()
