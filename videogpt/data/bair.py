"""data.format bair: BAIR robot pushing (bair_robot_pushing_dataset_v0.tar) as released, in TFRecords.

Layout: <source>/softmotion30_44k/{train,test}/*.tfrecords, or data.source pointing at softmotion30_44k/
itself. The split is the folder (test/ holds traj_0_to_255.tfrecords: the 256 test trajectories).

Each record is a tf.train.Example holding one trajectory: frame i (i = 0, 1, ..., 29) is the raw
64x64x3 uint8 RGB bytes of feature "{i}/image_aux1/encoded"; the 4-d action "{i}/action" is optional.
Files are read with videogpt.data.tfrecord (no TensorFlow), both CRCs of every record checked. One
TFRecord file is one work item: a file with a bad CRC, a truncated record or a record that is not a
trajectory is rejected as a whole (reason "corrupt TFRecord: ...", detail naming the record index); the
other files are kept. Trajectories become clips with the generic clip cutting (data.sequence_length,
frame_stride, clip_stride); manifest source "<file>#<record index>". Actions are stored per split as
<split>/actions (N, T, 4) float32, cut like the frames (NaN where a trajectory has none); a split without
any actions has no such array.

Frames are kept byte-exact when data.resolution is 64 (the native size); at any other resolution they go
through the same ffmpeg scale + centre-crop chain as videos (videogpt.data.rawframes). The records carry
no frame rate, so data.fps must be null (the store's fps is then null too).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from videogpt.config import DataParams, ParamsError
from videogpt.data.ffmpeg_io import VideoError
from videogpt.data.sources import (ACTIONS, Rejection, SPLITS, Source, SourceItem, UNLABELED, Video, require_no_fps,
                                   split_folder, walk_files)
from videogpt.data.rawframes import scale_frames
from videogpt.data.tfrecord import ProtobufError, TFRecordError, parse_example, read_tfrecords

DATA_DIR = "softmotion30_44k"
EXTENSION = ".tfrecords"
FRAME_KEY = "{}/image_aux1/encoded"
ACTION_KEY = "{}/action"


def _data_dir(root: Path) -> Path:
    return root / DATA_DIR if (root / DATA_DIR).is_dir() else root


def _has_tfrecords(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(e.name.endswith(EXTENSION) and not e.name.startswith(".") for e in entries)
    except OSError:
        return False


def looks_like_bair(root: Path) -> bool:
    """*.tfrecords directly in train/ or test/, under softmotion30_44k/ or data.source itself."""
    return any(_has_tfrecords(base / split) for base in (root / DATA_DIR, root) for split in SPLITS)


def discover_bair(params: DataParams) -> Source:
    root = Path(params.source)
    data = _data_dir(root)
    prefix = data.relative_to(root).as_posix() + "/" if data != root else ""
    require_no_fps(params, "bair", "trajectories carry no frame rate")
    if params.split_ratio is not None:
        raise ParamsError(f"data.split_ratio: must be null for data.format bair (the split is the train/ and "
                          f"test/ folder), got {params.split_ratio}")
    missing = [s for s in SPLITS if not (data / s).is_dir()]
    if missing:
        raise ParamsError(f"data.source: '{data}' has no {missing[0]}/ folder of {EXTENSION} files "
                          f"(expected {DATA_DIR}/train and {DATA_DIR}/test)")
    files, walk_errors = walk_files(data)
    rejected = [Rejection(prefix + r.source, r.split, r.reason, r.detail) for r in walk_errors]
    items = []
    for f in files:
        split = split_folder(f)
        if not f.endswith(EXTENSION):
            rejected.append(Rejection(prefix + f, split, "not a TFRecord file", f"expected *{EXTENSION}"))
        elif not split:
            rejected.append(Rejection(prefix + f, "", "outside train/ and test/"))
        else:
            items.append(SourceItem(prefix + f, split, UNLABELED, "bair_tfrecord"))
    if not items:
        raise ParamsError(f"data.source: no {EXTENSION} files in '{data}/train' or '{data}/test'")
    items.sort(key=lambda item: (SPLITS.index(item.split), item.path))
    return Source(root, items, [], rejected)


def trajectory(features: dict, record: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Frames (T, S, S, 3) uint8 and actions (T, A) float32 (NaN rows where a step has none) or None."""
    raw = []
    while (value := features.get(FRAME_KEY.format(len(raw)))) is not None:
        if not isinstance(value, list) or len(value) != 1:
            raise VideoError("not a BAIR trajectory", f"record {record}: {FRAME_KEY.format(len(raw))} is not "
                             "a single bytes value")
        raw.append(value[0])
    if not raw:
        names = ", ".join(sorted(features)[:4]) or "none"
        raise VideoError("not a BAIR trajectory", f"record {record}: no feature {FRAME_KEY.format(0)} "
                         f"(features: {names}{', ...' if len(features) > 4 else ''})")
    side = math.isqrt(len(raw[0]) // 3)
    for i, frame in enumerate(raw):
        if len(frame) != 3 * side * side or side == 0:
            raise VideoError("not a BAIR trajectory", f"record {record}: frame {i} has {len(frame)} bytes, "
                             f"expected {3 * side * side} (square RGB uint8)")
    frames = np.frombuffer(b"".join(raw), np.uint8).reshape(len(raw), side, side, 3)

    steps = [features.get(ACTION_KEY.format(i)) for i in range(len(raw))]
    present = [s for s in steps if isinstance(s, np.ndarray) and s.dtype == np.float32 and len(s)]
    if not present:
        return frames, None
    width = len(present[0])
    actions = np.full((len(raw), width), np.nan, np.float32)
    for i, step in enumerate(steps):
        if isinstance(step, np.ndarray) and step.dtype == np.float32 and len(step):
            if len(step) != width:
                raise VideoError("not a BAIR trajectory", f"record {record}: action {i} has {len(step)} values, "
                                 f"action 0 has {width}")
            actions[i] = step
    return frames, actions


def read_bair_file(path: Path, params: DataParams) -> list[Video]:
    """Every trajectory of one TFRecord file, as named Videos "<record index>"."""
    videos: list[Video] = []
    record = 0
    try:
        for record, data in enumerate(read_tfrecords(path)):
            frames, actions = trajectory(parse_example(data), record)
            side = frames.shape[1]
            videos.append(Video(frames, None, side, side, name=str(record),
                                extras={ACTIONS: actions} if actions is not None else {}))
    except TFRecordError as e:
        raise VideoError(f"corrupt TFRecord: {e.reason}", f"record {e.record}: {e.detail}") from None
    except ProtobufError as e:
        raise VideoError("corrupt TFRecord: not a tf.train.Example", f"record {record}: {e}") from None
    except OSError as e:
        raise VideoError(f"unreadable: {e.strerror or e}") from None
    if not videos:
        raise VideoError("empty TFRecord file", "0 records")
    if any(v.frames.shape[1] != params.resolution for v in videos):
        # one ffmpeg pass for the whole file: the chain is per frame, so batching changes nothing
        lengths = [len(v.frames) for v in videos]
        scaled = scale_frames((f for v in videos for f in v.frames), params.resolution, params.decode_timeout)
        for video, part in zip(videos, np.split(scaled, np.cumsum(lengths)[:-1])):
            video.frames = part
    return videos
