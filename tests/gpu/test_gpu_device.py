"""On one CUDA device: a few bf16-mixed training steps of both models through the stages' own Lightning
modules and Trainer factory, greedy cached sampling against the prior's full forward pass, and the I3D."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ddp_worker import BATCH, RandomTokens, tiny_vqvae
from test_ddp import write_clip_store
from videogpt.config import TrainerParams

STEPS = 4


def gpu_trainer(name: str, tmp_path):
    from videogpt.lightning import make_trainer
    tp = TrainerParams(accelerator="gpu", devices=1, precision="bf16-mixed", log_every_n_steps=1)
    return make_trainer(tp, name=name, max_steps=STEPS, ckpt_dir=tmp_path / f"ckpt_{name}",
                        live_dir=tmp_path / f"live_{name}", val_every=10_000, checkpoint_every=10_000, seed=0)


def params_moved(module, before: dict) -> bool:
    return any(not torch.equal(p.detach().cpu(), before[k]) for k, p in module.model.named_parameters())


def test_vqvae_trains_in_bf16_on_the_gpu(tmp_path):
    from videogpt.data.dataset import ClipDataset
    from videogpt.lightning import VQVAEModule
    from videogpt.vqvae import VQVAE
    write_clip_store(tmp_path / "clips.zarr")
    clips = str(tmp_path / "clips.zarr")
    torch.manual_seed(0)
    module = VQVAEModule(VQVAE(tiny_vqvae(clips)), lr=1e-3, log_every_n_steps=1)
    before = {k: p.detach().clone() for k, p in module.model.named_parameters()}
    trainer = gpu_trainer("vqvae", tmp_path)
    trainer.fit(module, DataLoader(ClipDataset(clips, "train"), batch_size=BATCH, shuffle=True, drop_last=True))
    assert trainer.global_step == STEPS
    assert next(module.model.parameters()).device.type == "cuda"
    assert params_moved(module, before)
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
    # the codebook's distances and EMA statistics stay float32 under bf16 autocast
    cb = module.model.codebook
    assert cb.embeddings.dtype == cb.N.dtype == cb.z_avg.dtype == torch.float32 and bool(cb.initialized)


def test_prior_trains_in_bf16_on_the_gpu(tmp_path):
    from videogpt.lightning import PriorModule
    from videogpt.prior import Prior, PriorConfig
    torch.manual_seed(0)
    cfg = PriorConfig(latent_shape=(2, 4, 4), n_codes=16, embedding_dim=8, n_layer=2, n_head=2, n_embd=32,
                      dropout=0.1, attn_dropout=0.1)
    module = PriorModule(Prior(cfg, torch.randn(16, 8)), lr=1e-3, weight_decay=0.0, warmup_steps=0,
                         max_steps=STEPS, log_every_n_steps=1)
    before = {k: p.detach().clone() for k, p in module.model.named_parameters()}
    trainer = gpu_trainer("prior", tmp_path)
    trainer.fit(module, DataLoader(RandomTokens(32, cfg.latent_shape, cfg.n_codes), batch_size=BATCH,
                                   shuffle=True, drop_last=True))
    assert trainer.global_step == STEPS and params_moved(module, before)
    assert all(torch.isfinite(p).all() for p in module.model.parameters())


def test_greedy_cached_sampling_on_the_gpu_equals_the_full_forward_pass():
    """temperature 0: each sampled token is the argmax given the tokens before it, so the prior's teacher-forced
    forward pass over the sampled grid (the recompute path) must pick every sampled token again."""
    from videogpt.prior import Prior, PriorConfig
    from videogpt.sampling import sample_tokens
    torch.manual_seed(0)
    cfg = PriorConfig(latent_shape=(2, 4, 4), n_codes=16, embedding_dim=8, n_layer=2, n_head=2, n_embd=32,
                      dropout=0.0, attn_dropout=0.0)
    prior = Prior(cfg, torch.randn(16, 8)).cuda().eval()
    tokens = sample_tokens(prior, 8, temperature=0.0, seed=0, batch_size=4)
    assert tokens.shape == (8, *cfg.latent_shape)
    with torch.no_grad():
        again = prior(tokens.cuda()).argmax(-1).cpu()
    assert torch.equal(again, tokens.cpu())
    # same seed, same device: the same samples
    assert torch.equal(sample_tokens(prior, 8, temperature=1.0, seed=3, batch_size=4),
                       sample_tokens(prior, 8, temperature=1.0, seed=3, batch_size=4))


@pytest.mark.parametrize("flavour", ["tf", "videogpt"])
def test_i3d_features_on_the_gpu_match_the_cpu(flavour, monkeypatch):
    from videogpt.metrics.i3d import I3D, i3d_features
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 convolutions, as on the CPU
    torch.manual_seed(0)
    model = I3D(flavour=flavour)
    videos = np.random.default_rng(0).integers(0, 256, (4, 16, 64, 64, 3), dtype=np.uint8)
    cpu = i3d_features(model, videos, batch_size=2, device="cpu")
    gpu = i3d_features(model, videos, batch_size=2, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    scale = np.abs(cpu).max()
    assert np.abs(gpu - cpu).max() <= 1e-3 * scale, (np.abs(gpu - cpu).max(), scale)
