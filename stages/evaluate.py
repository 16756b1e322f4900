"""Stage evaluate: FVD, R-FVD, FVD*, reconstruction NMSE/PSNR, test bits/dim and the classifier score
-> metrics/eval.json."""
from stages._common import run, start

from pipeline import paths


def main():
    params = start()
    from videogpt.distributed import init_from_env, rank_and_world
    from videogpt.evaluation import evaluate
    from videogpt.fileio import write_json
    init_from_env()  # under torchrun/srun the ranks share the I3D work
    report = evaluate(params, clips_path=paths.CLIPS, tokens_path=paths.TOKENS, vqvae_dir=paths.VQVAE_DIR,
                      prior_dir=paths.PRIOR_DIR, samples_dir=paths.SAMPLES, stats_dir=paths.REAL_STATS,
                      classifier_dir=paths.CLASSIFIER_DIR)
    if rank_and_world()[0] != 0:  # rank 0 writes the metrics
        return
    write_json(paths.EVAL_METRICS, report)
    fvd = report["fvd"]
    fvd_text = f"{fvd['mean']:.1f} ± {fvd['std']:.1f}" if fvd["mean"] is not None else f"null ({fvd['reason']})"
    print(f"evaluate: FVD {fvd_text} over {fvd['n_trials']} trial(s), NMSE {report['recon']['nmse']['mean']:.4f}, "
          f"test {report['test_bits_per_dim']['value']:.3f} bits/dim")
    cls = report["classifier"]
    print("evaluate: classifier " + (f"IS {cls['is']['mean']:.2f} (real clips {cls['real_is']['mean']:.2f}), "
                                     f"FD {cls['fd']['mean']:.2f}" if cls["is"]["mean"] is not None
                                     else f"score null ({cls['is']['reason']})"))


if __name__ == "__main__":
    run("evaluate", main)
