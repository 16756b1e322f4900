"""Stage fvd_real_stats: I3D statistics of the real test clips, cached so experiments reuse them."""
from stages._common import run, start

from pipeline import paths


def main():
    params = start()
    from videogpt.distributed import init_from_env
    init_from_env()  # under torchrun/srun the ranks share the I3D work
    from videogpt.evaluation import compute_real_stats
    info = compute_real_stats(params, clips_path=paths.CLIPS, out_dir=paths.REAL_STATS)
    print(f"fvd_real_stats: {'computed' if info['available'] else 'skipped: ' + info['reason']}")


if __name__ == "__main__":
    run("fvd_real_stats", main)
