"""Stage train_vqvae: clip store -> VQ-VAE (models/vqvae), metrics/vqvae.json, reports/vqvae_recon.png."""
from stages._common import run, start

from pipeline import paths


def main():
    params = start()
    from videogpt.training import train_vqvae
    report = train_vqvae(params, clips_path=paths.CLIPS, manifest_path=paths.MANIFEST, model_dir=paths.VQVAE_DIR,
                         ckpt_dir=paths.VQVAE_CKPT, live_dir=paths.VQVAE_LIVE, metrics_path=paths.VQVAE_METRICS,
                         picture_path=paths.REPORTS / "vqvae_recon.png")
    if report:
        print(f"train_vqvae: val NMSE {report['nmse']:.4f}, PSNR {report['psnr']:.2f} dB, "
              f"codes used {report['codes_used']:.0%}")


if __name__ == "__main__":
    run("train_vqvae", main)
