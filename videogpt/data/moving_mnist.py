"""data.format moving_mnist: the standard Moving MNIST file `mnist_test_seq.npy` (Srivastava et al. 2015).

Layout: every *.npy file directly in data.source, each an array (T, N, H, W) uint8 -- time first, then
sequence: (20, 10000, 64, 64) for the standard file. Other files there are ignored (counted); an .npy of
another shape or dtype is rejected with the reason.

Every sequence is one video, named "<file>#<sequence index>" in the manifest, unlabeled (-1). There are no
train/test folders: sequences are split at random by data.split_ratio (the test fraction) with
data.split_seed, deterministically (same seed, same files -> same split). data.split_ratio null means
DEFAULT_TEST_FRACTION = 0.1 for this format (9,000 train / 1,000 test sequences of the standard file), so
the preset and an unedited params.yaml give the same split. The grey value is replicated into R, G and B.
At data.resolution 64 the pixels are kept exactly; other resolutions use the ffmpeg scale + centre-crop
chain shared with videos (videogpt.data.rawframes). The file has no frame rate: data.fps must be null.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from videogpt.config import DataParams, ParamsError
from videogpt.data.ffmpeg_io import VideoError
from videogpt.data.sources import (OUTSIDE_ROOT, Rejection, SPLITS, Source, SourceItem, UNLABELED, Video, escapes,
                                   require_no_fps, split_files)
from videogpt.data.rawframes import scale_frames

DEFAULT_TEST_FRACTION = 0.1
EXTENSION = ".npy"


def _top_level_files(root: Path) -> list[str]:
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))


def looks_like_moving_mnist(root: Path) -> bool:
    """An .npy file directly in data.source."""
    try:
        return any(name.endswith(EXTENSION) for name in _top_level_files(root))
    except OSError:
        return False


def _open(path: Path) -> np.ndarray:
    """The array, memory-mapped (nothing is read until indexed); VideoError if it is not (T, N, H, W) uint8."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise VideoError("unreadable .npy", str(e)) from None
    if array.dtype != np.uint8 or array.ndim != 4 or 0 in array.shape:
        raise VideoError("not a Moving-MNIST array",
                         f"shape {array.shape} dtype {array.dtype}; expected (T, N, H, W) uint8")
    return array


def discover_moving_mnist(params: DataParams) -> Source:
    root = Path(params.source)
    require_no_fps(params, "moving_mnist", "the array has no frame rate")
    names = _top_level_files(root)
    arrays = [n for n in names if n.endswith(EXTENSION)]
    rejected: list[Rejection] = []
    sequences: list[str] = []
    for name in arrays:
        if target := escapes(root, root / name):  # a symlink leading out of data.source: not opened
            rejected.append(Rejection(name, "", OUTSIDE_ROOT, f"links to {target}"))
            continue
        try:
            n_sequences = _open(root / name).shape[1]
        except VideoError as e:
            rejected.append(Rejection(name, "", e.reason, e.detail))
            continue
        sequences += [f"{name}#{i}" for i in range(n_sequences)]
    if not sequences:
        raise ParamsError(f"data.source: no usable (T, N, H, W) uint8 {EXTENSION} file directly in '{root}'"
                          + (f" ({rejected[0].source}: {rejected[0].reason}, {rejected[0].detail})" if rejected else ""))
    ratio = DEFAULT_TEST_FRACTION if params.split_ratio is None else params.split_ratio
    split_of = split_files(sequences, ratio, params.split_seed)
    if "train" not in split_of.values():
        raise ParamsError(f"data.split_ratio: {ratio} leaves no training sequence out of {len(sequences)}")

    def order(key: str):
        name, _, index = key.rpartition("#")
        return SPLITS.index(split_of[key]), name, int(index)

    items = [SourceItem(key, split_of[key], UNLABELED, "moving_mnist") for key in sorted(sequences, key=order)]
    n_other = len(names) - len(arrays)
    return Source(root, items, [], rejected, ignored={f"not an {EXTENSION} file": n_other} if n_other else {})


def read_sequence(path: Path, params: DataParams) -> Video:
    """One sequence "<file>.npy#<index>" -> RGB frames (T, S, S, 3)."""
    file, _, index = path.name.rpartition("#")
    grey = np.asarray(_open(path.with_name(file))[:, int(index)])      # (T, H, W)
    height, width = grey.shape[1:]
    frames = np.repeat(grey[..., None], 3, axis=-1)
    if (height, width) != (params.resolution, params.resolution):
        frames = scale_frames(frames, params.resolution, params.decode_timeout)
    return Video(frames, None, width, height)
