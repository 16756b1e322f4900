"""Stage sample: prior + VQ-VAE -> samples/ (samples.zarr, one MP4 per sample, grid.gif, grid.png)."""
import os
import sys

# The repo root replaces the script's folder on sys.path: stages/tokenize.py must not shadow the
# standard library's tokenize module, and `pipeline`/`videogpt` import without installation.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from stages._common import run, start  # noqa: E402

from pipeline import paths  # noqa: E402


def main():
    params = start()
    from videogpt.generate import run_sample_stage
    info = run_sample_stage(params, prior_dir=paths.PRIOR_DIR, vqvae_dir=paths.VQVAE_DIR, clips_path=paths.CLIPS,
                            out_dir=paths.SAMPLES)
    print(f"sample: {info['n']} videos {info['shape']} -> {paths.SAMPLES}/grid.gif")


if __name__ == "__main__":
    run("sample", main)
