"""bench.gpu_memory: the saved-tensor count is exact on an op whose saved tensors are known, the fitted activation
formulas predict a size they were not fitted on, checkpointing keeps exactly the blocks' float32 inputs, and
(slow) every preset is set to the setting the estimate recommends for one 80 GB GPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_memory as gm
from videogpt.prior import PriorConfig
from videogpt.vqvae import VQVAEConfig

REPO = Path(__file__).resolve().parents[1]


def test_saved_bytes_counts_each_storage_once():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(5, 8, requires_grad=True)
    # under bf16 autocast the matmul saves the bf16 copies of its input (5x8) and weight (4x8), 2 bytes each;
    # reading the same input twice saves it once
    assert gm.saved_bytes(lambda: lin(x).sum()) == (5 * 8 + 4 * 8) * 2
    assert gm.saved_bytes(lambda: (lin(x) + lin(x)).sum()) == (5 * 8 + 4 * 8) * 2


PRIOR = PriorConfig(latent_shape=(4, 8, 8), n_codes=32, embedding_dim=8, n_layer=3, n_head=2, n_embd=32,
                    dropout=0.2, attn_dropout=0.0)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_prior_formula_predicts_a_size_it_was_not_fitted_on(checkpoint):
    c = gm.measure_prior(PRIOR, checkpoint)  # fitted at 1-2 layers and 1-2 latent frames
    direct = gm._per_sample(lambda b: gm._prior_forward(PRIOR, b, checkpoint))  # 3 layers, 4 frames
    assert gm.prior_activations(c, PRIOR, 1) == pytest.approx(direct, rel=1e-9)
    if checkpoint:  # each checkpointed block keeps only its float32 input
        assert c["a_tok"] == PRIOR.n_embd * 4 and c["a_smp"] == 0


def test_vqvae_formula_predicts_the_full_size():
    cfg = VQVAEConfig(input_shape=(4, 16, 16), n_hiddens=16, res_hiddens=8, n_res_layers=1, downsample=(2, 2, 2),
                      n_codes=16, embedding_dim=8, n_heads=2)
    c = gm.measure_vqvae(cfg, False)  # fitted at 4x8x4 and 4x8x8 inputs

    def build(batch):
        torch.manual_seed(0)
        model = gm.VQVAE(cfg).train()
        x = torch.rand(batch, 3, *cfg.input_shape) - 0.5
        with torch.no_grad():
            model(x)
        return lambda: model(x)["loss"]
    assert gm.vqvae_activations(c, cfg, 1) == pytest.approx(gm._per_sample(build), rel=1e-9)


def test_recommendation_prefers_no_checkpointing_then_fewest_steps():
    rows = [{"accumulate_grad_batches": k, "checkpoint_activations": ck, "fits": fits}
            for k, ck, fits in ((1, False, False), (2, False, True), (1, True, True), (2, True, True))]
    assert gm.recommend(rows, rows) == {"accumulate_grad_batches": 2, "checkpoint_activations": False,
                                        "batch_size": 16}
    other = [dict(r, fits=r["checkpoint_activations"]) for r in rows]
    assert gm.recommend(rows, other)["checkpoint_activations"] is True
    assert gm.recommend([dict(r, fits=False) for r in rows], rows) is None


@pytest.mark.slow
def test_every_preset_fits_one_80gb_gpu_as_set():
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_memory", "--device-memory", "80"], cwd=REPO,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["formula"].startswith("peak = ")
    for name, est in out["presets"].items():
        preset = est["preset"]
        k, ckpt = preset["trainer.accumulate_grad_batches"], preset["trainer.checkpoint_activations"]
        assert est["recommended"] == {"accumulate_grad_batches": k, "checkpoint_activations": ckpt,
                                      "batch_size": preset["prior.batch_size"]}, name
        for model in ("vqvae", "prior"):
            row = next(r for r in est[model]["settings"]
                       if (r["accumulate_grad_batches"], r["checkpoint_activations"]) == (k, ckpt))
            assert row["fits"] and row["batch_size"] == preset[f"{model}.batch_size"], (name, model, row)
