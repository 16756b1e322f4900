"""The table of data.format values: how each lists its inputs, how `data.format: auto` recognises it, and
the readers its items name (SourceItem.reader).

    videos        any folder of video files (videogpt/data/sources.py)
    ucf101        the official UCF-101 release and split lists (ucf101.py)
    bair          BAIR robot pushing TFRecords (bair.py)
    moving_mnist  mnist_test_seq.npy (moving_mnist.py)
    frames        one folder of images per video (frames.py)
    webdataset    video2dataset's WebDataset tar shards, local or in object storage (webdataset.py)

A new format is one module with a discover function (and a reader if plain video files do not fit) plus
a row here; the clip cutting, the store, the manifest and the rejection list stay the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from videogpt import storage
from videogpt.config import DataParams, ParamsError, check_ranges
from videogpt.data import bair, frames, moving_mnist, ucf101, webdataset
from videogpt.data.sources import Source, Video, discover_videos, read_remote_video, read_video_file


@dataclass(frozen=True)
class Format:
    discover: Callable[[DataParams], Source]  # data.* -> the items to read, in output order
    detect: Callable[[Path], bool] | None     # does data.source look like this format? None: never detected


# data.format auto: the first format in this order whose detector accepts data.source, else "videos".
FORMATS: dict[str, Format] = {
    "videos": Format(discover_videos, None),
    "ucf101": Format(ucf101.discover_ucf101, ucf101.looks_like_ucf101),
    "bair": Format(bair.discover_bair, bair.looks_like_bair),
    "moving_mnist": Format(moving_mnist.discover_moving_mnist, moving_mnist.looks_like_moving_mnist),
    "frames": Format(frames.discover_frames, frames.looks_like_frames),
    "webdataset": Format(webdataset.discover_webdataset, None),  # detected by discover from data.source
}

# A reader returns one Video, or a list of named Videos for an item holding several (raise VideoError to
# reject the whole item). Worker processes look them up here by the item's reader key.
READERS: dict[str, Callable[[Path | str, DataParams], Video | list[Video]]] = {
    "video": read_video_file,
    "remote_video": read_remote_video,      # a URL in object storage
    "bair_tfrecord": bair.read_bair_file,
    "moving_mnist": moving_mnist.read_sequence,
    "frames": frames.read_frame_folder,
    "tar_member": webdataset.read_tar_member,  # '<shard>.tar/<member>'
}


def detect_format(root: Path) -> str:
    """The data.format that data.source looks like (see each format's detector)."""
    return next((name for name, fmt in FORMATS.items() if fmt.detect is not None and fmt.detect(root)), "videos")


def discover(params: DataParams) -> Source:
    """Check data.* and list the inputs; raises ParamsError (naming the key) before anything is decoded."""
    check_ranges(params, "data")  # DataParams may be built by hand, not through videogpt.config.load
    if params.format == "webdataset" or webdataset.is_shard_pattern(params.source):
        if params.format not in ("auto", "webdataset"):
            raise ParamsError(f"data.format: {params.format} does not read .tar shards ('{params.source}'); "
                              "use webdataset or auto")
        source = webdataset.discover_webdataset(params)
        source.format = "webdataset"
        return source
    if storage.is_url(params.source):
        return _discover_remote(params)
    root = Path(params.source)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ParamsError(f"data.source: folder '{root}' {what}")
    fmt = detect_format(root) if params.format == "auto" else params.format
    if fmt not in FORMATS:
        raise NotImplementedError(f"data.format: '{params.format}' is not implemented yet; "
                                  f"available: auto, {', '.join(FORMATS)}")
    source = FORMATS[fmt].discover(params)
    source.format = fmt
    return source


def _discover_remote(params: DataParams) -> Source:
    """data.source in object storage: a folder of videos (data.format videos, the one read from there)."""
    if params.format not in ("auto", "videos"):
        raise ParamsError(f"data.format: {params.format} reads local folders only; data.source "
                          f"'{params.source}' is in object storage (there: videos)")
    fs, path = storage.filesystem(params.source)
    if not fs.isdir(path):
        raise ParamsError(f"data.source: folder '{params.source}' does not exist")
    source = discover_videos(params)
    source.format = "videos"
    return source
