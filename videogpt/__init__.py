"""VideoGPT: a VQ-VAE video tokenizer and a GPT prior over its codes.

    from videogpt import VideoGPT
    model = VideoGPT.from_pretrained("models")   # or a Hugging Face Hub repo id
    videos = model.sample(4)                     # uint8 (4, T, H, W, 3)

The models are imported on first use, so `import videogpt.data.ffmpeg_io` does not pay for torch.
"""
__version__ = "0.1.0"

_EXPORTS = {"VideoGPT": "videogpt.pretrained", "VQVAE": "videogpt.vqvae", "Prior": "videogpt.prior"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'videogpt' has no attribute {name!r}")
