"""Stage fvd_real_stats: the FVD trials' real subsets and their I3D statistics, cached so experiments reuse them."""
from stages._common import run, start

from pipeline import paths


def main():
    params = start()
    from videogpt.distributed import launched_as_rank_zero
    if not launched_as_rank_zero():  # under torchrun/srun: rank 0 does it all (compute.engine: ray spreads it)
        return
    from videogpt.evaluation import compute_real_stats
    info = compute_real_stats(params, clips_path=paths.CLIPS, out_dir=paths.REAL_STATS)
    what = "statistics computed" if info["available"] else "statistics skipped: " + info["reason"]
    p = info["protocol"]
    print(f"fvd_real_stats: {p['fvd_protocol']} protocol, {p['n_trials']} real subsets of {p['n_real']} clips; {what}")


if __name__ == "__main__":
    run("fvd_real_stats", main)
