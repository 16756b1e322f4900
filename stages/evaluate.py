"""Stage evaluate: FVD, R-FVD, FVD*, reconstruction NMSE/PSNR, test bits/dim and the classifier score
-> metrics/eval.json."""
from stages._common import run, start

from pipeline import paths


def main():
    params = start()
    from videogpt.distributed import launched_as_rank_zero
    if not launched_as_rank_zero():  # under torchrun/srun: rank 0 does it all (compute.engine: ray spreads it)
        return
    from videogpt.evaluation import evaluate
    from videogpt.fileio import write_json
    report = evaluate(params, clips_path=paths.CLIPS, tokens_path=paths.TOKENS, vqvae_dir=paths.VQVAE_DIR,
                      prior_dir=paths.PRIOR_DIR, samples_dir=paths.SAMPLES, stats_dir=paths.REAL_STATS,
                      classifier_dir=paths.CLASSIFIER_DIR)
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
