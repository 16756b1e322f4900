"""Stage tokenize: encode every clip once with the trained VQ-VAE into data/tokens.zarr."""
import os
import sys

# The repo root replaces the script's folder on sys.path: stages/tokenize.py must not shadow the
# standard library's tokenize module, and `pipeline`/`videogpt` import without installation.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from stages._common import run, start  # noqa: E402

from pipeline import paths  # noqa: E402


def main():
    params = start()
    from videogpt.checkpoint import fingerprint
    from videogpt.distributed import init_from_env
    from videogpt.tokens import build_token_store
    from videogpt.training import inference_device, load_vqvae
    init_from_env()  # under torchrun/srun each rank encodes its own blocks
    device = inference_device(params.trainer)
    counts = build_token_store(load_vqvae(paths.VQVAE_DIR), paths.CLIPS, paths.TOKENS,
                               fingerprint=fingerprint(paths.VQVAE_DIR), batch_size=params.tokenize.batch_size,
                               num_workers=params.tokenize.num_workers, device=device)
    print(f"tokenize: {counts} clips -> {paths.TOKENS}")


if __name__ == "__main__":
    run("tokenize", main)
