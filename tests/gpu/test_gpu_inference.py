"""The standalone stages (fvd_real_stats, tokenize, sample, evaluate) with trainer.accelerator: gpu: every model
input goes through the device helper to CUDA, uint8 clips as uint8, and the prior samples on the GPU; at both
inference precisions (tokenize.precision / eval.precision)."""
import json
import math

import pytest
import torch

from test_inference_device import assert_on, lay_out, run_inference_stages


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_standalone_stages_run_on_the_gpu(tmp_path, monkeypatch, precision):
    lay_out(tmp_path, "gpu", precision)
    log = run_inference_stages(tmp_path, monkeypatch)
    assert_on(log, torch.device("cuda"))
    report = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert math.isfinite(report["test_bits_per_dim"]["value"]) and math.isfinite(report["fvd"]["mean"])
