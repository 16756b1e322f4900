"""Stage sample: prior + VQ-VAE + the FVD trials' real clips -> samples/ (samples.zarr, MP4s, grid.gif, grid.png)."""
from stages._common import run, start

from pipeline import paths


def main():
    params = start()
    from videogpt.distributed import launched_as_rank_zero
    if not launched_as_rank_zero():  # under torchrun/srun: rank 0 does it all (compute.engine: ray spreads it)
        return
    from videogpt.generate import run_sample_stage
    info = run_sample_stage(params, prior_dir=paths.PRIOR_DIR, vqvae_dir=paths.VQVAE_DIR, clips_path=paths.CLIPS,
                            manifest_path=paths.MANIFEST, indices_path=paths.REAL_INDICES, out_dir=paths.SAMPLES)
    print(f"sample: {info['n']} videos {info['shape']} ({info['n_trials']} FVD trials) -> {paths.SAMPLES}/grid.gif")


if __name__ == "__main__":
    run("sample", main)
