"""The pipeline's loaders of the two saved models (folders written by videogpt.saved; files, format and the
from_pretrained / save_pretrained mixins live there, where the models import them).
"""
from __future__ import annotations

from pathlib import Path

from videogpt.prior import Prior
from videogpt.vqvae import VQVAE


def load_vqvae(directory: str | Path):
    """The VQ-VAE saved in the local folder `directory`, in eval mode."""
    return VQVAE.load_folder(directory)


def load_prior(directory: str | Path, vqvae=None):
    """(the prior saved in the local folder `directory`, in eval mode; its metadata). The prior holds its own
    copy of the codebook; `vqvae`, if given, must have the same one."""
    prior = Prior.load_folder(directory)
    if vqvae is not None:
        prior.check_codebook(vqvae)
    return prior, prior.saved_meta
