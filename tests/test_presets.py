"""The paper presets (params/presets/*.yaml): complete params files that pass the schema and hold the paper's
hyper-parameters (VideoGPT Table 8 for the VQ-VAE, Table 9 for the prior)."""
from pathlib import Path

import pytest
import yaml

from videogpt.config import Params, parse, to_dict
from videogpt.prior import PriorConfig
from videogpt.vqvae import VQVAEConfig

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "params/presets"

COMMON = {  # every preset
    "data.resolution": 64, "data.sequence_length": 16, "vqvae.n_hiddens": 240, "vqvae.res_hiddens": 128,
    "vqvae.beta": 0.25, "vqvae.lr": 7e-4, "prior.lr": 3e-4,
    "trainer.precision": "bf16-mixed", "eval.n_real": 256, "eval.n_trials": 10, "eval.fvd_protocol": "videogpt",
}
PAPER = {
    "bair": {
        "data.source": "data/bair/softmotion30_44k", "data.format": "bair", "latent": (8, 32, 32),
        "vqvae.n_res_layers": 4, "vqvae.attention": True, "vqvae.n_codes": 1024, "vqvae.embedding_dim": 256,
        "vqvae.max_steps": 100_000, "prior.n_layer": 16, "prior.n_head": 4, "prior.n_embd": 512,
        "prior.dropout": 0.2, "prior.max_steps": 150_000, "prior.condition": "frames", "prior.n_cond_frames": 1,
        "prior.resnet_depth": 34, "prior.resnet_dim": 512},
    "ucf101": {
        "data.source": "data/ucf101", "data.format": "ucf101", "data.ucf_split": 1, "latent": (4, 32, 32),
        "vqvae.n_res_layers": 4, "vqvae.attention": True, "vqvae.n_codes": 1024, "vqvae.embedding_dim": 256,
        "vqvae.max_steps": 100_000, "prior.n_layer": 20, "prior.n_head": 8, "prior.n_embd": 1024,
        "prior.dropout": 0.2, "prior.max_steps": 200_000, "prior.condition": "none"},
    "moving_mnist": {
        "data.source": "data/moving_mnist", "data.format": "moving_mnist", "latent": (4, 16, 16),
        "vqvae.n_res_layers": 2, "vqvae.attention": False, "vqvae.n_codes": 512, "vqvae.embedding_dim": 64,
        "vqvae.max_steps": 20_000, "prior.n_layer": 8, "prior.n_head": 4, "prior.n_embd": 192,
        "prior.dropout": 0.1, "prior.max_steps": 80_000, "prior.condition": "frames", "prior.n_cond_frames": 1,
        "prior.resnet_depth": 18, "prior.resnet_dim": 512},
}


def get(params: Params, key: str):
    value = params
    for part in key.split("."):
        value = getattr(value, part)
    return value


def test_there_is_one_preset_per_dataset():
    assert sorted(p.stem for p in PRESETS.glob("*.yaml")) == sorted(PAPER)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_preset_is_complete_valid_and_has_the_paper_values(name):
    raw = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    params = parse(raw)  # the schema: unknown keys, types, ranges, consistency
    defaults = to_dict(Params())
    assert raw.keys() == defaults.keys()
    for section, values in defaults.items():
        if isinstance(values, dict):
            assert set(raw[section]) == set(values), section  # every key spelled out, as in params.yaml
    expected = COMMON | PAPER[name]
    latent = expected.pop("latent")
    assert {key: get(params, key) for key in expected} == expected
    # the paper's batch of 32 per optimizer step: batch_size x accumulation x devices (bench.gpu_memory: fits 80 GB)
    t = params.trainer
    assert params.vqvae.batch_size * t.accumulate_grad_batches * t.devices * t.num_nodes == 32
    assert params.prior.batch_size * t.accumulate_grad_batches * t.devices * t.num_nodes == 32
    shape = (params.data.sequence_length, params.data.resolution, params.data.resolution)
    assert tuple(s // f for s, f in zip(shape, params.vqvae.downsample)) == latent
    # the model configurations accept them (checks the models' own constraints, builds nothing)
    vq = VQVAEConfig.from_params(params.vqvae, shape)
    PriorConfig.from_params(params.prior, vq, n_classes=101, frame_shape=shape[1:])
