"""The reference implementation's (wilson1yan/VideoGPT) side of issue 16's table, timed in the same process as
the project's side (`python -m bench.reference_configs --reference PATH`), so every ratio is measured on one
machine, back to back, rather than against figures from another host.

PATH is a checkout of the reference repository (the folder holding its `videogpt/` package), e.g. one made with
`git clone https://github.com/wilson1yan/VideoGPT`. Nothing is copied from it: its modules are imported under
the package name `reference_videogpt` (the project's own package is also called `videogpt`), without running
its `__init__.py`, which imports the download and dataset modules (gdown, h5py) that timing does not need. Its
utils module imports scikit-video for a video-saving helper no row calls; where that package is missing, an empty
`skvideo.io` module stands in. Its prior takes its VQ-VAE from `download.load_vqvae`, so the harness registers a
`download` module whose `load_vqvae` returns the VQ-VAE built here.

Each row does what the reference's own code does for that job, at the configs of bench.reference_configs:
- vqvae_train: `VQVAE.training_step` + backward + clip_grad_norm_(1.0) + Adam (its configure_optimizers).
- vqvae_encode: `VQVAE.encode` in eval mode under inference_mode.
- prior_train(_no_attn_dropout): `VideoGPT.forward` on token embeddings + backward + clip + Adam + cosine LR.
  Its training_step would also run the VQ-VAE encoder on the batch every step; that is left out, as the
  project tokenizes once, so the rows time the same work on both sides. Its activation checkpointing in
  training mode stays: it is part of how the reference trains.
- sample_b{n}: `VideoGPT.sample(n)`, which decodes with its own key/value cache and then runs the VQ-VAE decoder.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch

from bench.reference_configs import PRIOR_BATCH, PRIOR_REF, VQVAE_ENCODE_BATCH, VQVAE_REF, VQVAE_TRAIN_BATCH, clips

PACKAGE = "reference_videogpt"


def import_reference(path: str | Path) -> types.SimpleNamespace:
    """The reference's vqvae and gpt modules, imported from `path`/videogpt under the name reference_videogpt."""
    package_dir = Path(path) / "videogpt"
    if not (package_dir / "gpt.py").is_file() or not (package_dir / "vqvae.py").is_file():
        raise FileNotFoundError(f"--reference {path}: no videogpt/gpt.py and videogpt/vqvae.py there; expected a "
                                f"checkout of wilson1yan/VideoGPT")
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(package_dir)]  # submodules import from the checkout; __init__.py is not run
        sys.modules[PACKAGE] = package
        download = types.ModuleType(f"{PACKAGE}.download")
        download.load_vqvae = lambda name: download.vqvae  # noqa: E731 - set by prior() before each build
        sys.modules[download.__name__] = download
        if importlib.util.find_spec("skvideo") is None:  # used only by utils.save_video_grid
            sys.modules["skvideo"] = types.ModuleType("skvideo")
            sys.modules["skvideo.io"] = sys.modules["skvideo"].io = types.ModuleType("skvideo.io")
    return types.SimpleNamespace(vqvae=importlib.import_module(f"{PACKAGE}.vqvae"),
                                 gpt=importlib.import_module(f"{PACKAGE}.gpt"),
                                 download=sys.modules[f"{PACKAGE}.download"])


def vqvae_args() -> argparse.Namespace:
    T, H, _ = VQVAE_REF.input_shape
    return argparse.Namespace(embedding_dim=VQVAE_REF.embedding_dim, n_codes=VQVAE_REF.n_codes,
                              n_hiddens=VQVAE_REF.n_hiddens, n_res_layers=VQVAE_REF.n_res_layers,
                              downsample=list(VQVAE_REF.downsample), sequence_length=T, resolution=H)


def vqvae(ref):
    torch.manual_seed(0)
    return ref.vqvae.VQVAE(vqvae_args())


def prior(ref, attn_dropout: float):
    """The reference prior at PRIOR_REF over a freshly initialised reference VQ-VAE."""
    ref.download.vqvae = vqvae(ref)
    ref.download.vqvae.codebook._need_init = False
    args = argparse.Namespace(vqvae="(built by the bench)", n_cond_frames=0, class_cond=False, class_cond_dim=None,
                              hidden_dim=PRIOR_REF["n_embd"], heads=PRIOR_REF["n_head"], layers=PRIOR_REF["n_layer"],
                              dropout=PRIOR_REF["dropout"], attn_type="full", attn_dropout=attn_dropout,
                              max_steps=100_000, resolution=VQVAE_REF.input_shape[1],
                              sequence_length=VQVAE_REF.input_shape[0])
    torch.manual_seed(0)
    return ref.gpt.VideoGPT(args)


def vqvae_train_step(ref):
    model = vqvae(ref).train()
    opt = model.configure_optimizers()
    batch = {"video": clips(VQVAE_TRAIN_BATCH)}

    def step():
        loss = model.training_step(batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, 1


def vqvae_encode(ref):
    model = vqvae(ref).eval()
    model.codebook._need_init = False
    x = clips(VQVAE_ENCODE_BATCH)

    def step():
        with torch.inference_mode():
            model.encode(x)
    return step, 1


def prior_train_step(ref, attn_dropout: float):
    model = prior(ref, attn_dropout).train()
    model.vqvae.eval()
    (opt,), (sched,) = model.configure_optimizers()
    sched = sched["scheduler"]
    params = [p for p in model.parameters() if p.requires_grad]
    shape = model.shape
    targets = torch.randint(0, VQVAE_REF.n_codes, (PRIOR_BATCH, *shape), generator=torch.Generator().manual_seed(0))
    x = model.vqvae.codebook.dictionary_lookup(targets)  # (B, T, H, W, D): what its training_step feeds forward

    def step():
        loss, _ = model(x, targets, {})
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return step, 1


def sampling(ref, batch: int):
    model = prior(ref, PRIOR_REF["attn_dropout"]).eval()
    torch.nn.init.normal_(model.fc_out.weight, std=0.02)  # as the project's row: non-uniform distributions
    n_positions = int(torch.tensor(model.shape).prod())

    def run():
        torch.manual_seed(0)
        model.sample(batch)
    return run, n_positions


def build(ref, row: str):
    """(callable, units per call) for a reference row; rows are bench.reference_configs's names without suffixes."""
    if row == "vqvae_train":
        return vqvae_train_step(ref)
    if row == "vqvae_encode":
        return vqvae_encode(ref)
    if row == "prior_train":
        return prior_train_step(ref, PRIOR_REF["attn_dropout"])
    if row == "prior_train_no_attn_dropout":
        return prior_train_step(ref, 0.0)
    if row.startswith("sample_b"):
        return sampling(ref, int(row.removeprefix("sample_b")))
    raise ValueError(f"the reference has no row {row!r}")
