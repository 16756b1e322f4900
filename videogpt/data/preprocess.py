"""Build the clip store: find the videos, decode them in parallel, cut fixed-length clips, write them to Zarr.

    source (discover)  ->  SourceItem per file  ->  workers: READERS[item.reader]  ->  one writer: Zarr + CSVs

A *source* turns data.source into a sorted list of picklable SourceItems (path, split, label, reader); a
*reader* turns one item into frames. Dataset layouts (data.format) plug in as an entry in SOURCES, READERS
and DETECTORS: videos (this module), ucf101, bair, moving_mnist and frames (one module each in
videogpt/data/, imported at the end of this one); the clip cutting, the store, the manifest and the
rejection list stay the same. A reader may return several videos for one item (a TFRecord file holds
many trajectories): each is named "<item path>#<name>" in the manifest. Per-frame side data
(Video.extras, e.g. BAIR actions) is cut like the frames and stored as <split>/<name> (N, T, ...) float32.

Which files count as videos: those with an extension in VIDEO_EXTENSIONS are decoded. Every other file
(hidden files aside) is listed in rejected.csv as "not a video" without being opened, so nothing in the
input folder disappears silently and no one waits for ffmpeg to fail on thousands of .txt/.jpg files.

Containment: nothing outside data.source is read. A symlink (file or folder) below it that leads outside
it is listed in rejected.csv as "outside the input root" and neither followed nor decoded (DVC tracks
data.source, so such a file would be an untracked input); manifest paths are relative to data.source.

Resuming: an interrupted run (Ctrl-C, SIGKILL, a full disk) keeps its temporary outputs beside the
destinations, and a progress record in the temporary store written after every shard. Run again with the
same params and the same input files, it continues from the last shard written instead of starting over,
and the outputs equal those of an uninterrupted run (see _build).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import importlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import ZstdCodec

from pipeline.params import DataParams, ParamsError, check_ranges, to_dict
from pipeline.paths import CLIPS, MANIFEST, REJECTED
from videogpt.data.ffmpeg_io import VideoError, decode_video, probe
from videogpt.fileio import write_json
from videogpt.progress import progress_bar

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .gif .mpg .mpeg .m2v .wmv .asf .flv .f4v .ogv .3gp .3g2 .ts .mts .m2ts "
    ".vob .mxf .dv .y4m".split())
SPLITS = ("train", "test")
UNLABELED = -1
# Clips per shard file (about 1-50 MB): few files for DVC, whole-shard writes for Zarr. $VIDEOGPT_SHARD_CLIPS
# overrides it, a knob for tests (many shards from a few videos) and tuning; it is part of the resume key.
SHARD = int(os.environ.get("VIDEOGPT_SHARD_CLIPS") or 256)
if SHARD < 1:
    raise ValueError(f"VIDEOGPT_SHARD_CLIPS: {SHARD} is not a positive number of clips")
LABEL_CHUNK = 4096
# Knobs that cannot change what is in the store (how many decoders; a training-time flip). Left out of the
# recorded params so the store is byte-identical whatever the worker count.
NOT_CONTENT = ("num_workers", "hflip")

MANIFEST_COLUMNS = ["clip", "split", "source", "label", "class_name", "start_frame", "fps", "width", "height"]
REJECTED_COLUMNS = ["source", "split", "reason", "detail"]
OUTSIDE_ROOT = "outside the input root"
PROGRESS = "progress.json"  # in the temporary store: how far an interrupted run got (see _build)


# ------------------------------------------------------------------------------------------------
# Sources: what to read


@dataclass(frozen=True)
class SourceItem:
    path: str             # relative to the source root, '/'-separated
    split: str            # "train" or "test"
    label: int            # index into class_names; UNLABELED = -1
    reader: str = "video"  # key of READERS


@dataclass(frozen=True)
class Rejection:
    source: str
    split: str
    reason: str
    detail: str = ""


@dataclass
class Source:
    root: Path
    items: list[SourceItem]       # in output order: train first, then test, each sorted by path
    class_names: list[str]
    rejected: list[Rejection]     # known to be unusable without decoding
    format: str = "videos"        # the data.format that produced it (auto resolved)
    ignored: dict[str, int] = field(default_factory=dict)  # files deliberately left out, by reason


def escapes(root: Path, path: Path) -> str | None:
    """Where `path` really is, if that is outside `root` (through a symlink on the way); None if inside."""
    real = os.path.realpath(path)
    return None if Path(real).is_relative_to(os.path.realpath(root)) else real


def _walk_files(root: Path) -> tuple[list[str], list[Rejection]]:
    """All non-hidden files under root (relative, sorted), following symlinks that stay inside root;
    unreadable folders and symlinks leading outside root are rejected."""
    files, rejected = [], []

    def on_error(error: OSError):
        rel = Path(error.filename).relative_to(root).as_posix() if error.filename else "?"
        rejected.append(Rejection(rel + "/", "", f"unreadable: {error.strerror or error}"))

    def keep(folder: str, name: str) -> bool:
        # Only a symlink can lead out: everything else below a folder inside root is inside it.
        path = Path(folder, name)
        target = name[0] != "." and os.path.islink(path) and escapes(root, path)
        if target:
            rel = path.relative_to(root).as_posix() + ("/" if path.is_dir() else "")
            rejected.append(Rejection(rel, _split_folder(rel), OUTSIDE_ROOT, f"links to {target}"))
        return name[0] != "." and not target

    for folder, subfolders, names in os.walk(root, onerror=on_error, followlinks=True):
        subfolders[:] = [d for d in subfolders if keep(folder, d)]
        rel_folder = Path(folder).relative_to(root)
        files += [(rel_folder / name).as_posix() for name in names if keep(folder, name)]
    return sorted(files), sorted(rejected, key=lambda r: r.source)  # not in the file system's listing order


def _is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _split_folder(path: str) -> str:
    """'train' for 'train/cat/x.mp4', '' for files outside the split folders."""
    head, _, rest = path.partition("/")
    return head if rest and head in SPLITS else ""


def _split_files(files: list[str], ratio: float, seed: int) -> dict[str, str]:
    """Deterministic random test fraction (at least one file); the same seed and files give the same split."""
    n_test = max(1, round(len(files) * ratio))
    test = set(np.random.default_rng(seed).permutation(len(files))[:n_test].tolist())
    return {f: "test" if i in test else "train" for i, f in enumerate(files)}


def _uses_split_folders(root: Path, params: DataParams) -> bool:
    """True for the <source>/train + <source>/test layout; checks data.split_ratio fits the layout."""
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present and len(present) < len(SPLITS):
        missing = next(s for s in SPLITS if s not in present)
        raise ParamsError(f"data.source: '{root}' has a {present[0]}/ folder but no {missing}/ folder")
    if present and params.split_ratio is not None:
        raise ParamsError(f"data.split_ratio: must be null when data.source '{root}' has train/ and test/ "
                          f"folders (got {params.split_ratio})")
    if not present and params.split_ratio is None:
        raise ParamsError(f"data.split_ratio: data.source '{root}' has no train/ and test/ folders, "
                          "so set data.split_ratio (the test fraction, e.g. 0.2)")
    return bool(present)


def discover_videos(params: DataParams) -> Source:
    """Layout <source>/{train,test}/[class/]*.mp4, or <source>/[class/]*.mp4 split by data.split_ratio.
    The class of a file is the first folder below its split root (or below <source>); files directly in
    it are unlabeled."""
    root = Path(params.source)
    split_folders = _uses_split_folders(root, params)
    files, rejected = _walk_files(root)
    videos = [f for f in files if _is_video(f)]
    if split_folders:
        split_of = {f: _split_folder(f) for f in videos if _split_folder(f)}
        within_split = {f: f.split("/", 1)[1] for f in split_of}
        rejected += [Rejection(f, "", "outside train/ and test/") for f in videos if f not in split_of]
    else:
        split_of = _split_files(videos, params.split_ratio, params.split_seed)
        within_split = {f: f for f in videos}
    rejected += [Rejection(f, _split_folder(f), "not a video", f"'{Path(f).suffix}' is not a video extension")
                 for f in files if not _is_video(f)]
    if not split_of:
        raise ParamsError(f"data.source: no video files found in '{root}' "
                          f"(extensions: {' '.join(sorted(VIDEO_EXTENSIONS))})")
    if "train" not in split_of.values():
        raise ParamsError(f"data.split_ratio: {params.split_ratio} leaves no training video out of {len(split_of)}")

    class_of = {f: rel.split("/", 1)[0] if "/" in rel else None for f, rel in within_split.items()}
    class_names = sorted(set(class_of.values()) - {None})
    label = {name: i for i, name in enumerate(class_names)}
    order = sorted(split_of, key=lambda f: (SPLITS.index(split_of[f]), f))
    items = [SourceItem(f, split_of[f], label.get(class_of[f], UNLABELED)) for f in order]
    return Source(root, items, class_names, rejected)


SOURCES: dict[str, Callable[[DataParams], Source]] = {"videos": discover_videos}
# data.format auto: the first format in DETECTION_ORDER whose detector accepts data.source, else "videos".
DETECTION_ORDER = ("ucf101", "bair", "moving_mnist", "frames")
DETECTORS: dict[str, Callable[[Path], bool]] = {}


def detect_format(root: Path) -> str:
    """The data.format that data.source looks like (see each adapter's detector)."""
    return next((fmt for fmt in DETECTION_ORDER if fmt in DETECTORS and DETECTORS[fmt](root)), "videos")


def discover(params: DataParams) -> Source:
    """Check data.* and list the inputs; raises ParamsError (naming the key) before anything is decoded."""
    check_ranges(params, "data")  # DataParams may be built by hand, not through pipeline.params.load
    root = Path(params.source)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise ParamsError(f"data.source: folder '{root}' {what}")
    fmt = detect_format(root) if params.format == "auto" else params.format
    if fmt not in SOURCES:
        raise NotImplementedError(f"data.format: '{params.format}' is not implemented yet; "
                                  f"available: auto, {', '.join(SOURCES)}")
    source = SOURCES[fmt](params)
    source.format = fmt
    return source


# ------------------------------------------------------------------------------------------------
# Readers: one item -> frames (run in the worker processes)


@dataclass
class Video:
    frames: np.ndarray     # (F, S, S, 3) uint8
    fps: float | None
    width: int             # before scaling/cropping
    height: int
    name: str | None = None  # set when one item holds several videos: manifest source "<path>#<name>"
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame side data, (F, ...) each


def read_video_file(path: Path, params: DataParams) -> Video:
    info = probe(path, timeout=params.decode_timeout)
    frames = decode_video(path, params.resolution, fps=params.fps, timeout=params.decode_timeout)
    return Video(frames, params.fps or info.fps, info.width, info.height)


# A reader returns one Video, or a list of named Videos for an item holding several (raise VideoError to
# reject the whole item).
READERS: dict[str, Callable[[Path, DataParams], Video | list[Video]]] = {"video": read_video_file}


def clip_span(params: DataParams) -> int:
    """Frames one clip covers: sequence_length frames, frame_stride apart."""
    return (params.sequence_length - 1) * params.frame_stride + 1


def clip_starts(n_frames: int, params: DataParams) -> range:
    """First frame of every clip; data.clip_stride null means back-to-back, non-overlapping clips."""
    step = params.clip_stride or params.sequence_length * params.frame_stride
    return range(0, n_frames - clip_span(params) + 1, step)


@dataclass
class VideoClips:
    item: SourceItem
    video: Video           # frames trimmed to what the clips use
    starts: range


def _cut(item: SourceItem, video: Video, params: DataParams) -> VideoClips | Rejection:
    if video.name is not None:
        item = dataclasses.replace(item, path=f"{item.path}#{video.name}")
    n_frames, span = len(video.frames), clip_span(params)
    starts = clip_starts(n_frames, params)
    if not starts:
        return Rejection(item.path, item.split, f"too short ({n_frames} frames < {span})")
    video.frames = video.frames[:starts[-1] + span]
    video.extras = {k: v[:starts[-1] + span] for k, v in video.extras.items()}
    return VideoClips(item, video, starts)


def load_clips(root: Path, params: DataParams, item: SourceItem) -> list[VideoClips | Rejection]:
    """Worker task: decode one item. Returns, per video in it, its frames and clip starts (not the clips:
    overlapping clips would multiply the bytes sent back to the writer), or why it produced no clip."""
    target = escapes(root, root / item.path)  # the last check, whatever the adapter (and if a file changed since)
    if target:
        return [Rejection(item.path, item.split, OUTSIDE_ROOT, f"links to {target}")]
    try:
        videos = READERS[item.reader](root / item.path, params)
    except VideoError as e:
        return [Rejection(item.path, item.split, e.reason, e.detail)]
    if isinstance(videos, Video):
        videos = [videos]
    if not videos:
        return [Rejection(item.path, item.split, "no videos in file")]
    return [_cut(item, video, params) for video in videos]


def _ordered_map(fn: Callable, items: Iterable, num_workers: int) -> Iterator:
    """fn over items in input order, on num_workers processes. Unlike Pool.imap, at most a few results wait
    in memory when the writer is slower than the decoders (imap queues every finished result)."""
    if num_workers == 1:
        yield from map(fn, items)
        return
    with multiprocessing.Pool(num_workers) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 4 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ------------------------------------------------------------------------------------------------
# Writing: one process, whole shards


class CsvAppender:
    """A CSV written in pieces, so its rows never all sit in memory. Given `size`, the existing file is cut
    back to its first `size` bytes and continued instead (a resumed run)."""

    def __init__(self, path: Path, columns: list[str], size: int | None = None):
        self.columns = columns
        if size is None:
            self.file = open(path, "w", newline="", encoding="utf-8")
            pd.DataFrame(columns=columns).to_csv(self.file, index=False)
        else:
            os.truncate(path, size)
            self.file = open(path, "a", newline="", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        if rows:
            pd.DataFrame(rows, columns=self.columns).to_csv(self.file, header=False, index=False)

    def size(self) -> int:
        """Bytes written so far, all handed to the OS (so they outlive this process)."""
        self.file.flush()
        return os.fstat(self.file.fileno()).st_size

    def __enter__(self) -> "CsvAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


class SplitWriter:
    """Appends one split's clips to its Zarr arrays a whole shard at a time: a partial write would make
    Zarr rewrite the shard file, once per clip. Given `resume` (its entry of a progress record), it opens the
    arrays of an interrupted run and cuts them back to the clips recorded there."""

    def __init__(self, group: zarr.Group, clip_shape: tuple[int, ...], manifest: CsvAppender,
                 resume: dict | None = None):
        self.group = group
        self.manifest = manifest
        self.pending: list[tuple[np.ndarray, int, dict, dict]] = []  # (clip, label, manifest row, extras)
        if resume is None:
            self.extras: dict[str, zarr.Array] = {}  # created when the first clip carrying one arrives
            self.clips = group.create_array("clips", shape=(0, *clip_shape), dtype="uint8",
                                            chunks=(1, *clip_shape), shards=(SHARD, *clip_shape),
                                            compressors=ZstdCodec(level=3),
                                            dimension_names=("clip", "t", "h", "w", "c"))
            self.labels = group.create_array("labels", shape=(0,), dtype="int32", chunks=(LABEL_CHUNK,),
                                             dimension_names=("clip",))
            self.n_clips = self.n_videos = 0
            return
        self.clips, self.labels = group["clips"], group["labels"]
        self.extras = {name: group[name] for name in resume["extras"]}
        for name in set(group.array_keys()) - {"clips", "labels", *self.extras}:  # made after the record
            del group[name]
        self.n_clips, self.n_videos = resume["clips"], resume["videos"]
        for array in (self.clips, self.labels, *self.extras.values()):  # shrinking deletes the shards beyond
            array.resize((self.n_clips, *array.shape[1:]))

    def state(self) -> dict:
        return {"clips": self.n_clips, "videos": self.n_videos, "extras": list(self.extras)}

    def add(self, clip: np.ndarray, label: int, row: dict, extras: dict[str, np.ndarray] | None = None) -> None:
        self.pending.append((clip, label, {"clip": self.n_clips + len(self.pending), **row}, extras or {}))
        if len(self.pending) == SHARD:
            self.flush()

    def _flush_extras(self, extras: tuple[dict, ...], n: int) -> None:
        """Each extra as a float32 array (N, T, ...) beside clips; NaN for clips that lack it."""
        for name in sorted({k for e in extras for k in e}):
            shape = next(e[name].shape for e in extras if name in e)
            if name not in self.extras:  # earlier clips of this split had none: NaN
                self.extras[name] = self.group.create_array(
                    name, shape=(n, *shape), dtype="float32", chunks=(SHARD, *shape), fill_value=np.nan,
                    dimension_names=("clip", "t", *(f"d{i}" for i in range(1, len(shape)))))
            array = self.extras[name]
            if array.shape[1:] != shape:
                raise ValueError(f"{name}: per-clip shape {shape} differs from {array.shape[1:]}")
            block = np.full((len(extras), *shape), np.nan, np.float32)
            for i, e in enumerate(extras):
                if name in e:
                    block[i] = e[name]
            array.resize((n + len(extras), *shape))
            array[n:n + len(extras)] = block
        for name, array in self.extras.items():  # extras absent from this whole batch: NaN (the fill value)
            if array.shape[0] < n + len(extras):
                array.resize((n + len(extras), *array.shape[1:]))

    def flush(self) -> None:
        if not self.pending:
            return
        clips, labels, rows, extras = zip(*self.pending)
        n, k = self.n_clips, len(clips)
        self._flush_extras(extras, n)
        self.clips.resize((n + k, *self.clips.shape[1:]))
        self.clips[n:n + k] = np.stack(clips)
        self.labels.resize((n + k,))
        self.labels[n:n + k] = np.asarray(labels, np.int32)
        self.manifest.write(list(rows))
        self.n_clips += k
        self.pending = []


def _video_clips(result: VideoClips, params: DataParams, class_names: list[str]) -> Iterator[tuple]:
    """(clip, label, manifest row, extras) for each clip of one video."""
    item, video = result.item, result.video
    row = {"split": item.split, "source": item.path, "label": item.label,
           "class_name": class_names[item.label] if item.label != UNLABELED else "",
           "fps": video.fps, "width": video.width, "height": video.height}
    span = clip_span(params)
    for start in result.starts:
        extras = {k: v[start:start + span:params.frame_stride] for k, v in video.extras.items()}
        yield video.frames[start:start + span:params.frame_stride], item.label, {**row, "start_frame": start}, extras


class NoClipsError(RuntimeError):
    """No input file produced a single clip: nothing to train on."""


def _content_params(params: DataParams) -> dict:
    return {k: v for k, v in to_dict(params).items() if k not in NOT_CONTENT}


def _build(source: Source, params: DataParams, store: Path, manifest_path: Path, rejected_path: Path,
           key: str, resume: dict | None, progress: bool) -> dict:
    """Decode every item and write store + manifest + rejected list at the given (temporary) paths; with
    `resume` (the progress record of an interrupted run of the same key), continue that run.

    Invariant of the progress record (PROGRESS in the store): it is written, atomically, only right after
    a shard was written and while no clip waits in memory, and it describes the outputs at that moment:
    items before `item` are completely in them, so are the first `skip` clips of `item`, nothing else is;
    plus the clips per split, the bytes of both CSVs and the counters. An item's rejections and counts are
    written only after all its clips, so a record never holds part of them. Resuming cuts the arrays and
    CSVs back to the record, decodes `item` again, drops its first `skip` clips, and from there does exactly
    what the interrupted run did: the outputs equal an uninterrupted run's.
    """
    clip_shape = (params.sequence_length, params.resolution, params.resolution, 3)
    root = zarr.open_group(store, mode="w" if resume is None else "r+")
    state = resume or {"item": 0, "skip": 0, "splits": dict.fromkeys(SPLITS), "manifest_bytes": None,
                       "rejected_bytes": None, "reasons": collections.Counter(r.reason for r in source.rejected),
                       "frame_rates": []}
    reasons = collections.Counter(state["reasons"])
    frame_rates = collections.Counter(dict(state["frame_rates"]))  # [fps, videos] pairs: fps may be null
    first = state["item"]
    with contextlib.ExitStack() as stack:
        manifest = stack.enter_context(CsvAppender(manifest_path, MANIFEST_COLUMNS, state["manifest_bytes"]))
        rejected = stack.enter_context(CsvAppender(rejected_path, REJECTED_COLUMNS, state["rejected_bytes"]))
        if resume is None:
            rejected.write([dataclasses.asdict(r) for r in source.rejected])
        writers = {split: SplitWriter(root.require_group(split), clip_shape, manifest, state["splits"][split])
                   for split in SPLITS}

        def save_progress(item: int, skip: int) -> None:
            write_json(store / PROGRESS, {
                "key": key, "item": item, "skip": skip, "splits": {s: w.state() for s, w in writers.items()},
                "manifest_bytes": manifest.size(), "rejected_bytes": rejected.size(), "reasons": reasons,
                "frame_rates": list(frame_rates.items())})

        # closing(): on an error, stop the worker pool now rather than whenever the generator is collected
        results = stack.enter_context(contextlib.closing(
            _ordered_map(partial(load_clips, source.root, params), source.items[first:], params.num_workers)))
        bar = progress_bar(results, total=len(source.items), initial=first, desc="preprocess", unit="item",
                           file=sys.stderr, disable=not progress)
        for index, item_results in enumerate(bar, first):
            split = source.items[index].split
            for other in SPLITS:  # items come split by split: write the last, partial shard of the one before
                if other != split:
                    writers[other].flush()
            writer, done = writers[split], 0  # done: clips of this item written (or, resuming, written before)
            for result in item_results:
                if isinstance(result, VideoClips):
                    for clip in _video_clips(result, params, source.class_names):
                        done += 1
                        if index == first and done <= state["skip"]:
                            continue
                        writer.add(*clip)
                        if not any(w.pending for w in writers.values()):  # a shard was just written
                            save_progress(index, done)
            for result in item_results:  # the item's rejections and counts, now that all its clips are out
                if isinstance(result, Rejection):
                    rejected.write([dataclasses.asdict(result)])
                    reasons[result.reason] += 1
                else:
                    writer.n_videos += 1
                    frame_rates[result.video.fps] += 1
        for writer in writers.values():
            writer.flush()

    counts = {split: {"videos": w.n_videos, "clips": w.n_clips} for split, w in writers.items()}
    counts["rejected"] = reasons.total()
    if source.ignored:
        counts["ignored"] = sum(source.ignored.values())
    if not any(w.n_clips for w in writers.values()):
        summary = "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common(5))
        raise NoClipsError(f"data.source: none of the {len(source.items)} videos in '{source.root}' produced a "
                           f"clip of {clip_span(params)} frames ({summary})")
    # The real-time rate of a clip (for samples and reports): the decoded rate (data.fps, else the most
    # common native rate) over frame_stride. Manifest rows keep each video's own decoded rate.
    video_fps = params.fps or frame_rates.most_common(1)[0][0]
    fps = video_fps / params.frame_stride if video_fps else None
    root.attrs.update({"format": source.format, "class_names": source.class_names, "resolution": params.resolution,
                       "sequence_length": params.sequence_length, "frame_stride": params.frame_stride,
                       "fps": fps, "params": _content_params(params), "counts": counts})
    return counts


@dataclass
class StoreSummary:
    counts: dict          # {"train": {"videos", "clips"}, "test": {...}, "rejected": files in rejected.csv}
    class_names: list[str]
    seconds: float

    def __str__(self) -> str:
        splits = "; ".join(f"{s}: {self.counts[s]['clips']} clips from {self.counts[s]['videos']} videos"
                           for s in SPLITS)
        ignored = f"; {self.counts['ignored']} files ignored" if self.counts.get("ignored") else ""
        return (f"{splits}; {self.counts['rejected']} files rejected{ignored}; {len(self.class_names)} classes; "
                f"{self.seconds:.1f} s")


def _temp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        # After a failed write zarr's I/O threads may still be deleting their own `.partial` files:
        # a file vanishing under us is fine, a folder that survives two passes is not.
        for _ in range(2):
            shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _run_key(source: Source, params: DataParams) -> str:
    """Digest of what the outputs depend on: the content params, what discovery found, every input file's
    size and mtime, the shard size, and the code that writes them. Only a run with the same key is resumed."""
    def stat(f: str) -> list:
        try:
            st = (source.root / f).stat()
            return [f, st.st_size, st.st_mtime_ns]
        except OSError:
            return [f, None, None]

    files, _ = _walk_files(source.root)
    code = sorted(Path(__file__).parent.glob("*.py"))  # videogpt/data: a dependency of the stage in dvc.yaml
    key = {"params": _content_params(params), "format": source.format, "class_names": source.class_names,
           "items": [dataclasses.astuple(i) for i in source.items],
           "rejected": [dataclasses.astuple(r) for r in source.rejected], "inputs": [stat(f) for f in files],
           "shard": SHARD, "code": [hashlib.sha256(p.read_bytes()).hexdigest() for p in code],
           "zarr": zarr.__version__}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _resumable(temps: list[Path], key: str) -> dict | None:
    """The progress record left by an interrupted run with this key, if all its temporary outputs are there."""
    rejected, manifest, store = temps
    try:
        record = json.loads((store / PROGRESS).read_text())
        usable = (record["key"] == key and rejected.stat().st_size >= record["rejected_bytes"]
                  and manifest.stat().st_size >= record["manifest_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not usable:
        return None
    for leftover in [*store.rglob("*.partial"), store / (PROGRESS + ".tmp")]:  # files being written when killed
        leftover.unlink(missing_ok=True)
    return record


def build_clip_store(params: DataParams, store_path: str | Path = CLIPS, manifest_path: str | Path = MANIFEST,
                     rejected_path: str | Path = REJECTED, progress: bool = True) -> StoreSummary:
    """Build the clip store, manifest and rejected list from data.source.

    All three are written to '<name>.tmp' beside their destination and renamed only once everything
    succeeded (the store last), so an interrupted run leaves nothing that looks complete. It leaves its
    '.tmp' outputs (once it has written a shard): run again with the same params and input files, it
    continues from its last shard; otherwise they are deleted and the run starts over.
    Raises ParamsError (naming the data.* key) before decoding, NoClipsError if no file gave a clip.
    """
    started = time.perf_counter()
    source = discover(params)
    outputs = [Path(rejected_path), Path(manifest_path), Path(store_path)]  # store last: it marks completion
    temps = [_temp_path(p) for p in outputs]
    key = _run_key(source, params)
    resume = _resumable(temps, key)
    if resume:
        written = sum(split["clips"] for split in resume["splits"].values())
        print(f"preprocess: resuming after {resume['item']} of {len(source.items)} items "
              f"({written} clips already written; to start over instead, delete {temps[2]})", file=sys.stderr,
              flush=True)
    else:
        for path in temps:
            _remove(path)  # leftovers of an interrupted run with other params or inputs
            path.parent.mkdir(parents=True, exist_ok=True)
    try:
        counts = _build(source, params, temps[2], temps[1], temps[0], key, resume, progress)
        (temps[2] / PROGRESS).unlink(missing_ok=True)
        for tmp, out in zip(temps, outputs):
            _remove(out)
            os.replace(tmp, out)
    finally:
        if not (temps[2] / PROGRESS).is_file():  # a failed run's outputs are kept only if it can be resumed
            for path in temps:
                _remove(path)
    return StoreSummary(counts, source.class_names, time.perf_counter() - started)


# The dataset adapters add their entries to SOURCES, READERS and DETECTORS when imported (also in spawned
# worker processes, which import this module afresh).
for _adapter in ("ucf101", "bair", "moving_mnist", "frames"):
    importlib.import_module(f"videogpt.data.{_adapter}")
