"""Stage preprocess: videos in data.source -> data/clips.zarr, data/manifest.csv, data/rejected.csv."""
import os
import sys

# The repo root replaces the script's folder on sys.path (see stages/tokenize.py).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from stages._common import run, start  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.params import ParamsError  # noqa: E402


def main():
    params = start()
    from videogpt.data.preprocess import NoClipsError, build_clip_store
    try:
        summary = build_clip_store(params.data, paths.CLIPS, paths.MANIFEST, paths.REJECTED)
    except (ParamsError, NoClipsError, NotImplementedError) as err:
        sys.exit(f"preprocess: {err}")  # one clear line, exit status 1
    print(f"preprocess: {summary} -> {paths.CLIPS} (rejected files: {paths.REJECTED})")


if __name__ == "__main__":
    run("preprocess", main)
