"""data.format frames: videos stored as folders of image files, one folder per video.

Layout: as for video files, with a folder of frames in place of each file:
<source>/{train,test}/[<class>/]<video>/<frame>.png, or <source>/[<class>/]<video>/... split by
data.split_ratio. The folder holding the images is the video (manifest source: its path); its class is
the first folder below the split root when the video folder is deeper than that, else it is unlabeled.
Images lying directly in a split root (or in data.source) belong to no video folder and are rejected;
other files are listed in rejected.csv as "not an image" and the folder is still used.

Frames are taken in natural name order (frame_2 before frame_10; case-insensitive), decoded with Pillow
(any mode -> RGB; alpha dropped), then scaled and centre-cropped exactly like decoded videos: they are
piped as raw RGB into the same ffmpeg chain (short side -> data.resolution with an area filter, centre
square; videogpt.data.rawframes). Any size works, odd ones included; frames of different sizes are
each scaled by that rule. A frame Pillow cannot read rejects the whole folder, naming the frame. Image
folders have no frame rate: data.fps must be null.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from videogpt.config import DataParams, ParamsError
from videogpt.data.ffmpeg_io import VideoError
from videogpt.data.sources import (OUTSIDE_ROOT, Rejection, SPLITS, Source, VIDEO_EXTENSIONS, Video, labelled_items,
                                   require_no_fps, split_files, split_folder, uses_split_folders, walk_files)
from videogpt.data.rawframes import scale_frames

IMAGE_EXTENSIONS = frozenset(".png .jpg .jpeg .bmp .webp".split())


def is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def natural_key(name: str) -> tuple:
    """'frame_2.png' < 'frame_10.png': digit runs compare as numbers, the rest case-insensitively."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], name


def looks_like_frames(root: Path) -> bool:
    """Image files and no video file anywhere below data.source (hidden entries aside)."""
    found_image = False
    for _, folders, names in os.walk(root, followlinks=True):
        folders[:] = [d for d in folders if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            suffix = Path(name).suffix.lower()
            if suffix in VIDEO_EXTENSIONS:
                return False
            found_image = found_image or suffix in IMAGE_EXTENSIONS
    return found_image


def discover_frames(params: DataParams) -> Source:
    root = Path(params.source)
    require_no_fps(params, "frames", "image folders have no frame rate")
    split_folders = uses_split_folders(root, params)
    files, rejected = walk_files(root)
    folders: set[str] = set()
    for f in files:
        split = split_folder(f)
        if not is_image(f):
            rejected.append(Rejection(f, split, "not an image", f"'{Path(f).suffix}' is not an image extension"))
            continue
        folder = Path(f).parent.as_posix()
        if split_folders and not split_folder(folder):
            where = f"directly in {folder}/" if folder in SPLITS else "outside train/ and test/"
            rejected.append(Rejection(f, split, "frame outside a video folder", where))
        elif not split_folders and folder == ".":
            rejected.append(Rejection(f, "", "frame outside a video folder", "directly in data.source"))
        else:
            folders.add(folder)
    # The reader takes every image in a video folder: one holding a frame that links out of data.source
    # (rejected by the walk) is rejected as a whole.
    escaping = folders & {Path(r.source).parent.as_posix() for r in rejected
                          if r.reason == OUTSIDE_ROOT and not r.source.endswith("/")}
    rejected += [Rejection(d, split_folder(d), OUTSIDE_ROOT, "holds a frame linking outside the input root")
                 for d in sorted(escaping)]
    folders -= escaping
    if not folders:
        raise ParamsError(f"data.source: no folders of image files ({' '.join(sorted(IMAGE_EXTENSIONS))}) "
                          f"found in '{root}'")
    if split_folders:
        split_of = {d: split_folder(d) for d in folders}
        within = {d: d.split("/", 1)[1] for d in folders}
    else:
        split_of = split_files(sorted(folders), params.split_ratio, params.split_seed)
        within = {d: d for d in folders}
    if "train" not in split_of.values():
        raise ParamsError(f"data.split_ratio: {params.split_ratio} leaves no training folder out of {len(folders)}")
    items, class_names = labelled_items(split_of, within, reader="frames")
    return Source(root, items, class_names, rejected)


def frame_files(folder: Path) -> list[str]:
    """The image files of a video folder, in natural order."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if not e.name.startswith(".") and is_image(e.name) and e.is_file()]
    return sorted(names, key=natural_key)


def _decode(folder: Path, names: list[str], size: list) -> Iterator[np.ndarray]:
    for name in names:
        try:
            with Image.open(folder / name) as image:
                image.load()
                frame = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise VideoError("unreadable frame", f"{name}: {e}") from None
        if not size:
            size.extend(frame.shape[1::-1])  # width, height of the first frame
        yield frame


def read_frame_folder(path: Path, params: DataParams) -> Video:
    try:
        names = frame_files(path)
    except OSError as e:
        raise VideoError(f"unreadable: {e.strerror or e}") from None
    if not names:
        raise VideoError("no frames", "the folder holds no image file")
    size: list[int] = []
    frames = scale_frames(_decode(path, names, size), params.resolution, params.decode_timeout)
    return Video(frames, None, size[0], size[1])
