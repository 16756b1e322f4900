"""Helpers shared by the bench/*.py scripts: timing, the machine's measured matmul peak, machine facts,
peak RSS from /proc, one-JSON-object output, and small synthetic clip stores.

The scripts run as modules from the repository root, `python -m bench.<name>`, so bench/ is never on
sys.path (no file in it can shadow a standard-library module) and `bench`, `videogpt` and `pipeline` import
from the repository.

Conventions (README's benchmark table relies on them):
- times are medians over `runs` timed calls after `warmup` untimed ones (the machine is small and shared);
- "peak" is the float32 matmul FLOP/s measured in the same process, before and after the benchmark, at the
  same thread count; MFU = achieved model FLOP/s / that peak. Model FLOPs count a multiply-add as 2.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Timing


def time_runs(fn: Callable[[], object], warmup: int = 1, runs: int = 5) -> list[float]:
    """Wall-clock seconds of `runs` calls of fn after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: list[float]) -> dict:
    """Median / min / max and the raw times, rounded for the JSON output."""
    return {"median_s": round(statistics.median(times), 5), "min_s": round(min(times), 5),
            "max_s": round(max(times), 5), "times_s": [round(t, 5) for t in times]}


# --------------------------------------------------------------------------------------------
# Peak


class Peak:
    """The matmul peak, sampled repeatedly during a benchmark: the load on a shared machine drifts by 2x within
    a minute, so every timed step is paired with a peak sample taken right before it (`time_paired`) and its
    MFU is computed against that sample. `best` (the fastest matmul seen) gives a conservative MFU."""

    def __init__(self, n: int = 2048, dtype: torch.dtype = torch.float32):
        self.n, self.dtype = n, dtype
        self.a = torch.randn(n, n).to(dtype)
        self.b = torch.randn(n, n).to(dtype)
        self.out = torch.empty(n, n, dtype=dtype)
        self.samples: list[float] = []  # FLOP/s of each timed matmul
        for _ in range(2):  # warm (thread pool, page faults)
            torch.mm(self.a, self.b, out=self.out)
        for _ in range(3):
            self.sample()
        # A second, independent ceiling: a large compute-bound oneDNN 3D convolution. On CPUs where MKL's sgemm
        # does not use the widest vector units (e.g. AVX-512 on AMD), oneDNN's convs run up to 2x faster than
        # the matmul, so conv-heavy models can exceed "100% MFU" against the matmul peak.
        self.conv_samples = [self._conv_sample() for _ in range(3)]

    def _conv_sample(self) -> float:
        if not hasattr(self, "_conv_x"):
            self._conv_x = torch.randn(1, 128, 8, 32, 32)
            self._conv_w = torch.randn(128, 128, 3, 3, 3)
            torch.nn.functional.conv3d(self._conv_x, self._conv_w, padding=1)
        t0 = time.perf_counter()
        torch.nn.functional.conv3d(self._conv_x, self._conv_w, padding=1)
        return 2.0 * 128 * 128 * 27 * 8 * 32 * 32 / (time.perf_counter() - t0)

    def sample(self) -> float:
        t0 = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        flops = 2.0 * self.n ** 3 / (time.perf_counter() - t0)
        self.samples.append(flops)
        if hasattr(self, "conv_samples"):  # its best over the run is the ceiling; sample it as often
            self.conv_samples.append(self._conv_sample())
        return flops

    @property
    def flops(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return max(self.samples)

    def time_paired(self, fn: Callable[[], object], warmup: int = 1, runs: int = 5) -> tuple[list[float], list[float]]:
        """(times of fn, peak FLOP/s sampled just before each timed call)."""
        for _ in range(warmup):
            fn()
        times, peaks, cpu = [], [], 0.0
        for _ in range(runs):
            peaks.append(self.sample())
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            cpu += time.process_time() - c0
        self.last_cpu_per_wall = cpu / sum(times)  # ~threads when not contended (OpenMP spins count too)
        return times, peaks

    def mfu_stats(self, flops_per_call: float, times: list[float], peaks: list[float]) -> dict:
        """mfu: median over calls of (achieved FLOP/s / the peak sampled just before that call);
        mfu_vs_best_peak: median achieved FLOP/s / the fastest matmul of the whole process;
        mfu_vs_median_peak: median achieved / median of every peak sample of the process;
        mfu_vs_conv_peak: median achieved / the fastest large oneDNN conv3d (the higher ceiling on AVX-512 AMD)."""
        achieved = [flops_per_call / t for t in times]
        return {"mfu": round(statistics.median(a / p for a, p in zip(achieved, peaks)), 4),
                "mfu_vs_best_peak": round(statistics.median(achieved) / self.best, 4),
                "mfu_vs_median_peak": round(statistics.median(achieved) / self.flops, 4),
                "mfu_vs_conv_peak": round(statistics.median(achieved) / max(self.conv_samples), 4),
                "paired_peak_gflops": [round(p / 1e9, 1) for p in peaks]}

    def record(self) -> dict:
        return {"matmul_n": self.n, "dtype": str(self.dtype).replace("torch.", ""),
                "gflops_median": round(self.flops / 1e9, 2), "gflops_best": round(self.best / 1e9, 2),
                "gflops_min": round(min(self.samples) / 1e9, 2), "n_samples": len(self.samples),
                "onednn_conv3d_gflops_best": round(max(self.conv_samples) / 1e9, 2),
                "onednn_conv3d_gflops_median": round(statistics.median(self.conv_samples) / 1e9, 2)}


# --------------------------------------------------------------------------------------------
# Machine facts and memory


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict:
    """What the numbers depend on: CPU, cores, threads, load, torch build."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    return {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_affinity": affinity,
        "mem_total_gb": round(mem_kb / 2 ** 20, 1),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "python": platform.python_version(), "platform": platform.platform(),
        "loadavg_1_5_15": loadavg(),
    }


def _status_kb(field: str, pid: str = "self") -> int:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM in /proc/self/status), MiB."""
    return _status_kb("VmHWM") / 1024


def rss_mb() -> float:
    """Current resident set size of this process (VmRSS), MiB."""
    return _status_kb("VmRSS") / 1024


def children_peak_rss_mb() -> float:
    """Largest peak RSS of any terminated, waited-for child process (worker pools, ffmpeg), MiB."""
    import resource
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------------------------
# Command line and output


NO_BF16 = "no native bf16 kernels on this CPU (torch.ops.mkldnn._is_mkldnn_bf16_supported): bf16 runs 5-20x slower"


def native_bf16() -> bool:
    """Whether this CPU has native bf16 kernels; without them (AVX2-only hosts) the bf16 rows are skipped."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: every core this process may use)")
    ap.add_argument("--quick", action="store_true", help="fewer runs / smaller configs (for run_all)")
    return ap


def set_threads(threads: int | None) -> int:
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:
            threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def emit(result: dict) -> dict:
    """Print the result as one JSON object on one stdout line (machine facts and date added) and return it."""
    result = {**result, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {**machine_info(), **result.get("machine", {})}}
    print(json.dumps(result), flush=True)
    return result


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Synthetic clip stores


class _NoManifest:
    def write(self, rows) -> None:
        pass


def moving_digit_clips(n: int, seq_len: int, resolution: int, seed: int = 0):
    """Yield n (seq_len, R, R, 3) uint8 moving-digit clips (the built-in dataset's generator)."""
    import numpy as np
    from videogpt.config import DefaultDataParams
    from videogpt.data.moving_digits import make_video

    dp = DefaultDataParams(resolution=resolution, n_frames=seq_len, digit_size=max(8, resolution * 7 // 16))
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        yield i % 10, make_video([i % 10], dp, rng)


def make_clip_store(path: str | Path, n_train: int, n_test: int = 0, seq_len: int = 8, resolution: int = 32,
                    seed: int = 0) -> Path:
    """A clip store in the exact layout of the preprocess stage (its own SplitWriter: same chunks, shards,
    codec), filled with moving-digit clips, without decoding any video."""
    import zarr
    from videogpt.data.clip_store import SplitWriter

    path = Path(path)
    root = zarr.open_group(str(path), mode="w")
    counts = {}
    for split, n in (("train", n_train), ("test", n_test)):
        writer = SplitWriter(root.create_group(split), (seq_len, resolution, resolution, 3), _NoManifest())
        for label, clip in moving_digit_clips(n, seq_len, resolution, seed=seed + (split == "test")):
            writer.add(clip, label, {})
        writer.flush()
        counts[split] = {"videos": n, "clips": writer.n_clips}
    root.attrs.update({"class_names": [str(d) for d in range(10)], "resolution": resolution,
                       "sequence_length": seq_len, "frame_stride": 1, "fps": 8.0, "params": {}, "counts": counts})
    return path


# --------------------------------------------------------------------------------------------
# Profile


def profile_top(fn: Callable[[], object], steps: int = 2, top: int = 12) -> list[dict]:
    """Run fn `steps` times under torch.profiler (CPU) and return the ops with the most self CPU time:
    [{op, self_ms_per_step, pct, calls_per_step}], largest first. For spotting what limits MFU."""
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 2),
             "pct": round(100.0 * e.self_cpu_time_total / total, 1), "calls_per_step": e.count // steps}
            for e in events[:top]]
