"""Stage fvd_real_stats: I3D statistics of the real test clips, cached so experiments reuse them."""
import os
import sys

# The repo root replaces the script's folder on sys.path (see stages/tokenize.py).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from stages._common import run, start  # noqa: E402

from pipeline import paths  # noqa: E402


def main():
    params = start()
    from videogpt.distributed import init_from_env
    init_from_env()  # under torchrun/srun the ranks share the I3D work
    from videogpt.evaluation import compute_real_stats
    info = compute_real_stats(params, clips_path=paths.CLIPS, out_dir=paths.REAL_STATS)
    print(f"fvd_real_stats: {'computed' if info['available'] else 'skipped: ' + info['reason']}")


if __name__ == "__main__":
    run("fvd_real_stats", main)
