"""VideoGPT: a VQ-VAE video tokenizer and a GPT prior over its codes."""
__version__ = "0.1.0"
