"""bench.gpu keeps working without a GPU: its --tiny CPU run passes its own checks (bf16 losses that fall and track
float32, greedy sampling over every position equal to the full forward), counts the prior's causal attention as
executed, and predicts every stage's time; the datasheet peaks are found by device name."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_bench_tiny_on_cpu():
    proc = subprocess.run([sys.executable, "-m", "bench.gpu", "--device", "cpu", "--tiny", "--steps", "14",
                           "--warmup", "2"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["ok"] and all(out["checks"].values()) and len(out["checks"]) == 7
    assert out["peak"]["source"].startswith("measured") and out["peak"]["bf16_peak_flops"] > 0
    assert {"torch", "cuda", "cudnn"} <= out["software"].keys()
    tiny = out["presets"]["tiny"]
    for model in ("vqvae", "prior"):
        r = tiny[model]["bf16"]
        assert r["timed_steps"] == 14 and r["step_s_min"] <= r["step_s_median"]
        assert r["items_per_s"] > 0 and r["mfu_vs_bf16_peak"] > 0
        assert tiny[model]["same_weights_loss"]["fp32"] != tiny[model]["same_weights_loss"]["bf16"]  # really bf16
        assert tiny[model]["bf16_loss_falls"]["ok"]
    # causal attention counted as executed: half of the L x L scores fewer than the full-attention count
    cfg, prior = tiny["prior_config"], tiny["prior"]
    L, batch = 2 * 8 * 8, tiny["settings"]["prior.batch_size"]
    skipped = 3 * 2 * cfg["n_layer"] * L * cfg["n_embd"] * batch * L / 1e9
    assert prior["model_gflops_per_step_full_attention"] - prior["model_gflops_per_step"] == \
        pytest.approx(skipped, abs=2e-3)
    assert prior["sdpa_backend"]
    assert tiny["sampler"]["positions"] == L and tiny["sampler"]["greedy_equals_forward"]  # every position
    hours = tiny["predicted_hours"]
    assert {"train_vqvae", "tokenize", "train_prior", "fvd_real_stats", "sample", "evaluate"} <= hours.keys()
    assert hours["total"] > 0


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
