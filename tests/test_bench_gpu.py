"""bench.gpu keeps working without a GPU: its --tiny CPU run passes its own checks, and the datasheet peaks are
found by device name."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_bench_tiny_on_cpu():
    proc = subprocess.run([sys.executable, "-m", "bench.gpu", "--device", "cpu", "--tiny", "--steps", "1", "--warmup", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["ok"] and all(out["checks"].values())
    assert out["peak"]["source"].startswith("measured") and out["peak"]["bf16_peak_flops"] > 0
    for model in ("vqvae", "prior"):
        for prec in ("bf16", "fp32"):
            r = out[model][prec]
            assert r["step_s_min"] > 0 and r["items_per_s"] > 0 and r["mfu_vs_bf16_peak"] > 0
        assert out[model]["same_weights_loss"]["fp32"] != out[model]["same_weights_loss"]["bf16"]  # really bf16
    assert out["sampler"]["cached_equals_recompute"]


def test_datasheet_peaks_by_device_name():
    saved = list(sys.path)
    try:
        sys.path.insert(0, str(REPO))
        from bench.gpu import datasheet_peak
    finally:
        sys.path[:] = saved
    assert datasheet_peak("NVIDIA H100 80GB HBM3") == ("H100", 989e12)
    assert datasheet_peak("NVIDIA H100 PCIe") == ("H100 PCIe", 756e12)
    assert datasheet_peak("NVIDIA H200") == ("H200", 989e12)
    assert datasheet_peak("NVIDIA A100-SXM4-80GB") == ("A100", 312e12)
    assert datasheet_peak("NVIDIA L4") == ("L4", 121e12)
    assert datasheet_peak("Tesla V100-SXM2-16GB") is None  # no bf16 tensor cores: measured instead
