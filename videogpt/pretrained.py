"""A trained VideoGPT in one object: load it, sample videos, turn videos into codes and back, publish it.

    from videogpt import VideoGPT
    model = VideoGPT.from_pretrained("models")     # the pipeline's models/ folder, or a Hub repo id "owner/name"
    videos = model.sample(4, seed=0)               # uint8 (4, T, H, W, 3)
    codes = model.encode(videos)                   # (4, t, h, w) codes
    again = model.decode(codes)                    # uint8 (4, T, H, W, 3): the VQ-VAE's reconstruction

On disk and on the Hub a VideoGPT is a folder holding `vqvae/` and `prior/` (each a `VQVAE` / `Prior` saved
by videogpt.saved), as the pipeline's `models/` does, and a README.md model card.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from videogpt.saved import Pretrained
from videogpt.prior import Prior
from videogpt.sampling import sample, tokens_to_videos, videos_to_tokens
from videogpt.vqvae import VQVAE


class VideoGPT(nn.Module, Pretrained):
    """A VQ-VAE and the prior trained on its codes. Move it with `.to(device)`; it loads in eval mode."""

    card_title = "VideoGPT"

    def __init__(self, vqvae: VQVAE, prior: Prior):
        super().__init__()
        prior.check_codebook(vqvae)
        self.vqvae, self.prior = vqvae, prior

    @classmethod
    def load_folder(cls, directory: str | Path) -> "VideoGPT":
        directory = Path(directory)
        return cls(VQVAE.load_folder(directory / "vqvae"), Prior.load_folder(directory / "prior")).eval()

    def write_folder(self, directory: Path) -> None:
        for name, part in (("vqvae", self.vqvae), ("prior", self.prior)):
            (directory / name).mkdir()
            part.write_folder(directory / name)

    def card_configs(self) -> dict[str, dict]:
        return self.vqvae.card_configs() | self.prior.card_configs()

    def sample(self, n: int, **kwargs) -> np.ndarray:
        """n videos, uint8 (n, T, H, W, 3): `videogpt.sampling.sample(prior, vqvae, n, **kwargs)`, the sample
        stage's own call, so with the same seed and arguments the videos are bitwise the stage's. kwargs:
        seed (0), temperature (1.0), top_k, top_p, batch_size (16), and label= (n,) class ids for a
        class-conditional prior or frames= (n, 3, n_cond_frames, H, W) in [-0.5, 0.5] for a frame-conditional one."""
        return sample(self.prior, self.vqvae, n, **kwargs)

    def encode(self, videos, batch_size: int = 16) -> torch.Tensor:
        """uint8 videos (N, T, H, W, 3) of the model's clip size -> codes (N, t, h, w) long, on the CPU."""
        return videos_to_tokens(self.vqvae, videos, batch_size=batch_size)

    def decode(self, codes, batch_size: int = 16) -> np.ndarray:
        """codes (N, t, h, w) -> uint8 videos (N, T, H, W, 3)."""
        return tokens_to_videos(self.vqvae, torch.as_tensor(np.asarray(codes)).long(), batch_size=batch_size)
