"""Stage preprocess: videos in data.source -> data/clips.zarr, data/manifest.csv, data/rejected.csv."""
import sys

from stages._common import run, start

from pipeline import paths
from videogpt.config import ParamsError


def main():
    params = start()
    from videogpt.data.clip_store import NoClipsError, build_clip_store
    try:
        summary = build_clip_store(params.data, paths.CLIPS, paths.MANIFEST, paths.REJECTED, root=params.storage.root,
                                   compute=params.compute)
    except (ParamsError, NoClipsError, NotImplementedError) as err:
        sys.exit(f"preprocess: {err}")  # one clear line, exit status 1
    print(f"preprocess: {summary} -> {paths.CLIPS} (rejected files: {paths.REJECTED})")


if __name__ == "__main__":
    run("preprocess", main)
