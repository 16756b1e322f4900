"""Where every artifact of the pipeline lives (relative to the repository root).

dvc.yaml declares the same paths; tests/test_params.py checks the two agree.
"""
from pathlib import Path

DEFAULT_VIDEOS = Path("data/default_videos")
CLIPS = Path("data/clips.zarr")            # per split: clips (N,T,H,W,3) uint8, labels (N,)
MANIFEST = Path("data/manifest.csv")       # one row per clip: where it came from
REJECTED = Path("data/rejected.csv")       # every input file that produced no clip, with the reason
TOKENS = Path("data/tokens.zarr")          # per split: tokens (N,t,h,w), labels (N,)

MODELS = Path("models")                     # a VideoGPT folder: VideoGPT.from_pretrained("models")
VQVAE_DIR = MODELS / "vqvae"               # model.safetensors + config.json
PRIOR_DIR = MODELS / "prior"
CLASSIFIER_DIR = MODELS / "classifier"     # the sample-quality score's classifier (or no_labels.json)
VQVAE_CKPT = Path("checkpoints/vqvae")     # resumable Lightning checkpoints (scratch, git-ignored; no DVC out)
PRIOR_CKPT = Path("checkpoints/prior")
VQVAE_LIVE = Path("dvclive/vqvae")         # dvclive logs (metrics.json, plots/)
PRIOR_LIVE = Path("dvclive/prior")

SAMPLES = Path("samples")                  # samples.zarr, mp4/, grid.gif, grid.png
REPORTS = Path("reports")                  # pictures and pages for people
REPORT_HTML = REPORTS / "index.html"       # the run's report, one self-contained page (stage report)
EXPERIMENTS_HTML = REPORTS / "experiments.html"  # experiments compared (python -m pipeline.report experiments)
REAL_STATS = Path("cache/i3d_real_stats")  # I3D statistics of the real set, keyed by protocol
REAL_INDICES = REAL_STATS / "indices.json"  # the FVD trials' real test clips (written with the statistics)

VQVAE_METRICS = Path("metrics/vqvae.json")
PRIOR_METRICS = Path("metrics/prior.json")
EVAL_METRICS = Path("metrics/eval.json")
