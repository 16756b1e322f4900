"""Stage tokenize: encode every clip once with the trained VQ-VAE into data/tokens.zarr."""
from stages._common import run, start

from pipeline import paths


def main():
    params = start()
    from videogpt.checkpoint import load_vqvae
    from videogpt.saved import fingerprint
    from videogpt.distributed import inference_device, init_from_env
    from videogpt.tokens import build_token_store
    init_from_env()  # under torchrun/srun each rank encodes its own blocks
    device = inference_device(params.trainer)
    counts = build_token_store(load_vqvae(paths.VQVAE_DIR), paths.CLIPS, paths.TOKENS,
                               fingerprint=fingerprint(paths.VQVAE_DIR), batch_size=params.tokenize.batch_size,
                               num_workers=params.tokenize.num_workers, device=device,
                               precision=params.tokenize.precision, root=params.storage.root,
                               compute=params.compute)
    print(f"tokenize: {counts} clips -> {paths.TOKENS}")


if __name__ == "__main__":
    run("tokenize", main)
