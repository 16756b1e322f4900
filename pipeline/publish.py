"""Publish the trained models with their metrics: the Hugging Face Hub, or a folder to inspect first.

    python -m pipeline.publish OWNER/NAME [--private]   # upload models/ + a model card (needs `hf auth login`)
    python -m pipeline.publish --save-to dist/videogpt  # write exactly what would be uploaded, offline

The model card lists every metric of metrics/*.json with its protocol. The upload needs the network and
a Hub token, so it is not exercised by the offline tests (the folder it uploads is).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline import paths

METRICS_FILES = (paths.VQVAE_METRICS, paths.PRIOR_METRICS, paths.EVAL_METRICS)


def run_metrics(root: Path) -> dict[str, dict]:
    """The run's metrics files that exist, by their path in the repository."""
    return {str(p): json.loads((root / p).read_text()) for p in METRICS_FILES if (root / p).is_file()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.publish", description=__doc__.split("\n\n")[0])
    ap.add_argument("repo_id", nargs="?", help="Hub model repo to upload to (created if needed), e.g. me/videogpt-bair")
    ap.add_argument("--save-to", metavar="DIR", help="write the folder that would be uploaded, and upload nothing")
    ap.add_argument("--private", action="store_true", help="create the Hub repo as private")
    ap.add_argument("--repo", default=".", help="repository root holding models/ and metrics/ (default: here)")
    args = ap.parse_args(argv)
    if bool(args.repo_id) == bool(args.save_to):
        ap.error("give a Hub repo id or --save-to DIR (one of the two)")
    from videogpt import VideoGPT
    root = Path(args.repo)
    model = VideoGPT.from_pretrained(root / paths.MODELS)
    metrics = run_metrics(root)
    if args.save_to:
        print(model.save_pretrained(args.save_to, metrics=metrics))
    else:
        print(model.push_to_hub(args.repo_id, metrics=metrics, private=args.private))
    return 0


if __name__ == "__main__":
    sys.exit(main())
