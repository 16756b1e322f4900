"""Safe model files: weights as safetensors, config and metadata as JSON. Nothing is unpickled.

`save_model` writes a model directory; `load_vqvae` and `load_prior` rebuild the models from one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from videogpt.fileio import atomic_path, file_sha256
from videogpt.prior import Prior, PriorConfig
from videogpt.vqvae import VQVAE, VQVAEConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_model(directory: str | Path, model: torch.nn.Module, config, meta: dict | None = None) -> None:
    """Write `model.safetensors` + `config.json` into `directory`, atomically as a pair.

    Both files go into `<directory>.tmp`, which then replaces `directory`: a crash never leaves
    new weights beside an old config.
    """
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(tmp / WEIGHTS) as weights:
        save_file(state, str(weights))
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    payload = {"config": cfg, "meta": meta or {}, "weights_sha256": file_sha256(tmp / WEIGHTS)}
    (tmp / CONFIG).write_text(json.dumps(payload, indent=2, sort_keys=True))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def load_model_files(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """Read (config dict, state dict, meta) written by `save_model`; clear error if absent."""
    directory = Path(directory)
    wpath, cpath = directory / WEIGHTS, directory / CONFIG
    for p in (wpath, cpath):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; train the model first (dvc repro) or check the path")
    payload = json.loads(cpath.read_text())
    return payload["config"], load_file(str(wpath)), payload.get("meta", {})


def fingerprint(directory: str | Path) -> str:
    """Identity of a saved model: the sha256 of its weights file."""
    return json.loads((Path(directory) / CONFIG).read_text())["weights_sha256"]


def load_vqvae(directory: str | Path) -> VQVAE:
    """The VQ-VAE saved in `directory`, in eval mode."""
    cfg, state, _ = load_model_files(directory)
    model = VQVAE(VQVAEConfig(**cfg))
    model.load_state_dict(state)
    return model.eval()


def load_prior(directory: str | Path, vqvae: VQVAE) -> tuple[Prior, dict]:
    """(the prior saved in `directory`, in eval mode, over the codebook of `vqvae`; its metadata)."""
    cfg, state, meta = load_model_files(directory)
    model = Prior(PriorConfig(**cfg), vqvae.codebook.embeddings.detach().clone())
    model.load_state_dict(state)
    return model.eval(), meta
