"""Stage train_prior: token store -> GPT prior (models/prior), metrics/prior.json (bits/dim)."""
from stages._common import run, start

from pipeline import paths


def main():
    params = start()
    from videogpt.training import train_prior
    report = train_prior(params, vqvae_dir=paths.VQVAE_DIR, tokens_path=paths.TOKENS, clips_path=paths.CLIPS,
                         model_dir=paths.PRIOR_DIR, ckpt_dir=paths.PRIOR_CKPT, live_dir=paths.PRIOR_LIVE,
                         metrics_path=paths.PRIOR_METRICS)
    if report:
        print(f"train_prior: val {report['val_bits_per_dim']:.3f} bits/dim "
              f"(unigram entropy of the codes {report['train_unigram_entropy_bits']:.3f})")


if __name__ == "__main__":
    run("train_prior", main)
