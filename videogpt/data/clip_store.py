"""The clip store: the one module that knows its layout. It builds the store (decode in parallel, cut clips,
write Zarr + CSVs), resumes an interrupted build, and reads it back for training, tokenizing, sampling and
evaluation.

    formats.discover  ->  SourceItem per file  ->  workers: formats.READERS[item.reader]  ->  one writer

Layout (Zarr v3 directory store): per split `<split>/clips` (N, T, H, W, 3) uint8 in shards of SHARD clips,
`<split>/labels` (N,) int32 (-1 = unlabeled), per-frame side data (Video.extras, e.g. BAIR actions) cut like
the frames as `<split>/<name>` (N, T, ...) float32, and root attributes format, class_names, resolution,
sequence_length, frame_stride, fps, params (the data.* keys that decide the content) and counts. Beside it,
manifest.csv has one row per clip (where it came from) and rejected.csv one row per input that gave none.
A reader may return several videos for one item (a TFRecord file holds many trajectories): each is named
"<item path>#<name>" in the manifest.

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
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import ZstdCodec

from videogpt import storage
from videogpt.engine import ordered_map
from videogpt.config import ComputeParams, DataParams, ParamsError, to_dict
from videogpt.data.ffmpeg_io import VideoError
from videogpt.data.formats import READERS, discover
from videogpt.data.sources import (ACTION_SUFFIXES, ACTIONS, OUTSIDE_ROOT, SPLITS, UNLABELED, Rejection, Source,
                                   SourceItem, Video, escapes, file_stats)
from videogpt.fileio import write_json
from videogpt.progress import progress_bar

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
PROGRESS = "progress.json"  # in the temporary store: how far an interrupted run got (see _build)


# ------------------------------------------------------------------------------------------------
# Cutting: one item -> clips (run in the worker processes)


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


def load_clips(root: Path | str, params: DataParams, item: SourceItem) -> list[VideoClips | Rejection]:
    """Worker task: decode one item. Returns, per video in it, its frames and clip starts (not the clips:
    overlapping clips would multiply the bytes sent back to the writer), or why it produced no clip."""
    if storage.is_url(root):  # object storage: no links to follow out
        location = storage.join(root, item.path)
    else:
        location = root / item.path
        target = escapes(root, location)  # the last check, whatever the adapter (and if a file changed since)
        if target:
            return [Rejection(item.path, item.split, OUTSIDE_ROOT, f"links to {target}")]
    try:
        videos = READERS[item.reader](location, params)
    except VideoError as e:
        return [Rejection(item.path, item.split, e.reason, e.detail)]
    if isinstance(videos, Video):
        videos = [videos]
    if not videos:
        return [Rejection(item.path, item.split, "no videos in file")]
    return [_cut(item, video, params) for video in videos]


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
    Zarr rewrite the shard file, once per clip. Labels wait in memory until a whole label chunk (or the
    split's end) is there, so every shard and chunk object is written once (in object storage: one PUT);
    only the arrays' small zarr.json is rewritten as they grow. Given `resume` (its entry of a progress
    record), it opens the arrays of an interrupted run and cuts them back to the clips recorded there."""

    def __init__(self, group: zarr.Group, clip_shape: tuple[int, ...], manifest: CsvAppender,
                 resume: dict | None = None):
        self.group = group
        self.manifest = manifest
        self.pending: list[tuple[np.ndarray, int, dict, dict]] = []  # (clip, label, manifest row, extras)
        # labels of the clips after the last whole label chunk written (all flushed clips' labels are here or
        # in the array)
        self.unwritten_labels: list[int] = [] if resume is None else resume["labels"]
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
        return {"clips": self.n_clips, "videos": self.n_videos, "extras": list(self.extras),
                "labels": list(self.unwritten_labels)}

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
        self.unwritten_labels += labels
        self.manifest.write(list(rows))
        self.n_clips += k
        self.pending = []
        self._write_labels(whole_chunks_only=True)

    def _write_labels(self, whole_chunks_only: bool) -> None:
        """Write the waiting labels: those filling whole label chunks, or (at the end) all."""
        start = self.n_clips - len(self.unwritten_labels)  # a multiple of LABEL_CHUNK
        stop = start + len(self.unwritten_labels) // LABEL_CHUNK * LABEL_CHUNK if whole_chunks_only else self.n_clips
        if stop > start:
            self.labels[start:stop] = np.asarray(self.unwritten_labels[:stop - start], np.int32)
            self.unwritten_labels = self.unwritten_labels[stop - start:]

    def finish(self) -> None:
        """Write what waits: the last, partial shard and the last labels."""
        self.flush()
        self._write_labels(whole_chunks_only=False)


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


def _check_extra_shapes(result: VideoClips | Rejection, shapes: dict[str, tuple]) -> VideoClips | Rejection:
    """The video, or its rejection if its per-frame side data (actions) has another shape than the first
    video's that had any; records the shapes of the first."""
    if isinstance(result, Rejection):
        return result
    for name, values in result.video.extras.items():
        expected = shapes.setdefault(name, values.shape[1:])
        if values.shape[1:] != expected:
            item = result.item
            return Rejection(item.path, item.split, f"{name} of another shape",
                             f"{values.shape[1:]} values per frame; the videos before it have {expected}")
    return result


class NoClipsError(RuntimeError):
    """No input file produced a single clip: nothing to train on."""


# Keys added after stores were first built, recorded only when set: a store built without them keeps its bytes.
RECORDED_WHEN_SET = ("label_key", "split_key")


def _content_params(params: DataParams) -> dict:
    return {k: v for k, v in to_dict(params).items()
            if k not in NOT_CONTENT and not (k in RECORDED_WHEN_SET and v is None)}


def _build(source: Source, params: DataParams, store, manifest_path: Path, rejected_path: Path,
           key: str, resume: dict | None, progress: bool, progress_file: Path | None, compute: ComputeParams | None) -> dict:
    """Decode every item and write store (a local path or a zarr store) + manifest + rejected list at the
    given (temporary) paths; with `resume` (the progress record of an interrupted run of the same key),
    continue that run. progress_file None: no progress record (a run that cannot be resumed). The items are
    decoded where `compute` says (videogpt.engine) and written here, in item order.

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
        # per-frame shape of each extra, fixed by the first video carrying it (resuming: by the stored arrays)
        extra_shapes = {name: array.shape[2:] for w in writers.values() for name, array in w.extras.items()}

        def save_progress(item: int, skip: int) -> None:
            if progress_file is None:
                return
            write_json(progress_file, {
                "key": key, "item": item, "skip": skip, "splits": {s: w.state() for s, w in writers.items()},
                "manifest_bytes": manifest.size(), "rejected_bytes": rejected.size(), "reasons": reasons,
                "frame_rates": list(frame_rates.items())})

        # closing(): on an error, stop the worker pool now rather than whenever the generator is collected
        results = stack.enter_context(contextlib.closing(
            ordered_map(partial(load_clips, source.root, params), source.items[first:], compute, params.num_workers)))
        bar = progress_bar(results, total=len(source.items), initial=first, desc="preprocess", unit="item",
                           file=sys.stderr, disable=not progress)
        for index, item_results in enumerate(bar, first):
            split = source.items[index].split
            for other in SPLITS:  # items come split by split: write the last, partial shard of the one before
                if other != split:
                    writers[other].flush()
            writer, done = writers[split], 0  # done: clips of this item written (or, resuming, written before)
            item_results = [_check_extra_shapes(result, extra_shapes) for result in item_results]
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
            writer.finish()

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
    size and mtime (in object storage: its ETag), the shard size, and the code that writes them. Only a run
    with the same key is resumed; under storage.root it names the output prefix."""
    code = sorted(Path(__file__).parent.glob("*.py"))  # videogpt/data: a dependency of the stage in dvc.yaml
    key = {"params": _content_params(params), "format": source.format, "class_names": source.class_names,
           "items": [dataclasses.astuple(i) for i in source.items],
           "rejected": [dataclasses.astuple(r) for r in source.rejected], "inputs": file_stats(source.root),
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


def _say_resuming(record: dict, source: Source, work) -> None:
    written = sum(split["clips"] for split in record["splits"].values())
    print(f"preprocess: resuming after {record['item']} of {len(source.items)} items ({written} clips already "
          f"written; to start over instead, delete {work})", file=sys.stderr, flush=True)


def build_clip_store(params: DataParams, store_path: str | Path, manifest_path: str | Path,
                     rejected_path: str | Path, progress: bool = True, root: str | None = None,
                     compute: ComputeParams | None = None) -> StoreSummary:
    """Build the clip store, manifest and rejected list from data.source.

    With `root` (storage.root: a local folder or an fsspec URL) the three are written under the immutable
    prefix <root>/clips/<key> (see videogpt.storage) and store_path becomes the pointer file to it; see
    _build_in_prefix. Without it (the default), all three are written to '<name>.tmp' beside their
    destination and renamed only once everything succeeded (the store last), so an interrupted run leaves
    nothing that looks complete. It leaves its '.tmp' outputs (once it has written a shard): run again with
    the same params and input files, it continues from its last shard; otherwise they are deleted and the
    run starts over.
    `compute` (the compute params; None: local) says where the videos are decoded; the outputs are the same
    bytes whatever the engine and the number of workers.
    Raises ParamsError (naming the data.* key) before decoding, NoClipsError if no file gave a clip.
    """
    started = time.perf_counter()
    source = discover(params)
    if root is not None:
        counts = _build_in_prefix(source, params, root, Path(store_path), Path(manifest_path), Path(rejected_path),
                                  progress, compute)
        return StoreSummary(counts, source.class_names, time.perf_counter() - started)
    outputs = [Path(rejected_path), Path(manifest_path), Path(store_path)]  # store last: it marks completion
    temps = [_temp_path(p) for p in outputs]
    key = _run_key(source, params)
    resume = _resumable(temps, key)
    if resume:
        _say_resuming(resume, source, temps[2])
    else:
        for path in temps:
            _remove(path)  # leftovers of an interrupted run with other params or inputs
            path.parent.mkdir(parents=True, exist_ok=True)
    try:
        counts = _build(source, params, temps[2], temps[1], temps[0], key, resume, progress, temps[2] / PROGRESS,
                        compute)
        (temps[2] / PROGRESS).unlink(missing_ok=True)
        for tmp, out in zip(temps, outputs):
            _remove(out)
            os.replace(tmp, out)
    finally:
        if not (temps[2] / PROGRESS).is_file():  # a failed run's outputs are kept only if it can be resumed
            for path in temps:
                _remove(path)
    return StoreSummary(counts, source.class_names, time.perf_counter() - started)


STORE, MANIFEST, REJECTED = "clips.zarr", "manifest.csv", "rejected.csv"  # names inside a storage prefix


def _build_in_prefix(source: Source, params: DataParams, root: str, pointer_path: Path, manifest_path: Path,
                     rejected_path: Path, progress: bool, compute: ComputeParams | None) -> dict:
    """Build into <root>/clips/<key> (key: _run_key) unless that prefix is complete already (the same inputs,
    params and code wrote it: nothing is decoded). The Zarr store goes straight to the prefix, every shard
    object written once; the CSVs and the progress record are kept locally in '<pointer>.prefix.tmp' while it
    runs, then the CSVs are uploaded. Then _COMPLETE.json, then local copies of the CSVs (small dvc outs) and
    the pointer file at pointer_path. A prefix without its marker is what an interrupted run left: rerun on
    the same machine with the same key, it continues from its last whole shard in the prefix, as the default
    layout does; without that local record the prefix is deleted and written again."""
    key = _run_key(source, params)
    prefix = storage.stage_prefix(root, "clips", key)
    fs, path = storage.filesystem(prefix)
    if not storage.is_complete(prefix):
        work = pointer_path.with_name(pointer_path.name + ".prefix.tmp")
        csvs = {REJECTED: work / REJECTED, MANIFEST: work / MANIFEST}
        store = storage.join(prefix, STORE)
        resume = _resumable([csvs[REJECTED], csvs[MANIFEST], work], key)
        if resume and fs.exists(storage.join(path, STORE, "zarr.json")):
            _say_resuming(resume, source, work)
        else:
            resume = None
            storage.remove(prefix)
            _remove(work)
            work.mkdir(parents=True)
        try:
            counts = _build(source, params, storage.zarr_store(store), csvs[MANIFEST], csvs[REJECTED], key, resume,
                            progress, work / PROGRESS, compute)
            for name, local in csvs.items():
                fs.put_file(str(local), storage.join(path, name))
            storage.write_marker(prefix, key=key, counts=counts)
            _remove(work)
        finally:
            if not (work / PROGRESS).is_file():  # kept only if the run can be resumed
                _remove(work)
    marker = storage.read_marker(prefix)
    for name, out in ((REJECTED, rejected_path), (MANIFEST, manifest_path)):
        out.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(storage.join(path, name), str(_temp_path(out)))
        os.replace(_temp_path(out), out)
    storage.write_pointer(pointer_path, prefix, marker)
    return marker["counts"]


# ------------------------------------------------------------------------------------------------
# Reading


def store_location(store_path: str | Path) -> str:
    """Where another process (a Ray worker, whatever its working folder) opens the clip store named by
    store_path (a local store, a pointer file or a URL): a URL, or an absolute local path."""
    return storage.absolute(storage.resolve(store_path, STORE))


def open_store(store_path: str | Path) -> zarr.Group:
    """The store's root group, read-only; a missing store says how to build it. store_path is a local store,
    a pointer file (storage.root set: the store in its complete prefix) or an fsspec URL of a store."""
    location = storage.resolve(store_path, STORE)
    local = storage.local_path(location)
    if local is not None and not (Path(local) / "zarr.json").is_file():
        raise FileNotFoundError(f"{store_path}: clip store not found; build it with `dvc repro preprocess`")
    return zarr.open_group(storage.zarr_store(location, read_only=True), mode="r")


def open_split(store_path: str | Path, split: str) -> zarr.Group:
    """The group <store>/<split> holding `clips` (N, T, H, W, 3) uint8 and `labels` (N,) int32."""
    root = open_store(store_path)
    if split not in root.group_keys():
        raise KeyError(f"{store_path}: no split '{split}'; available: {', '.join(sorted(root.group_keys()))}")
    return root[split]


def store_splits(store_path: str | Path) -> list[str]:
    """The splits the store holds, in SPLITS order."""
    present = set(open_store(store_path).group_keys())
    return [split for split in SPLITS if split in present]


def store_attrs(store_path: str | Path) -> dict:
    """Root attributes: format, class_names, resolution, sequence_length, frame_stride, fps, params, counts."""
    return dict(open_store(store_path).attrs)


def clips_array(store_path: str | Path, split: str) -> zarr.Array:
    """The clips of a split, (N, T, H, W, 3) uint8, opened lazily (index it to read)."""
    return open_split(store_path, split)["clips"]


def read_labels(store_path: str | Path, split: str) -> np.ndarray:
    """The labels of a split, (N,) int32; -1 = unlabeled."""
    return open_split(store_path, split)["labels"][:]


def read_clips(store_path: str | Path, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Clips [start, stop) of a split as uint8 (n, T, H, W, 3); one bulk read, fast for whole shards."""
    return clips_array(store_path, split)[start:stop]


def read_clips_at(store_path: str | Path, split: str, indices, n_frames: int | None = None) -> np.ndarray:
    """Clips at `indices` (any order, repeats allowed) of a split as uint8 (n, T', H, W, 3), only their first
    n_frames frames if given. Each distinct clip is read once, in ascending order (fast on the shards)."""
    indices = np.asarray(indices, np.int64)
    clips = clips_array(store_path, split)
    if indices.size and (indices.min() < 0 or indices.max() >= clips.shape[0]):
        raise IndexError(f"{store_path}/{split}: clip indices must be in [0, {clips.shape[0]}), got "
                         f"{indices.min()}..{indices.max()}")
    unique, inverse = np.unique(indices, return_inverse=True)
    frames = slice(None) if n_frames is None else slice(0, n_frames)
    return np.asarray(clips.get_orthogonal_selection((unique, frames)))[inverse]


def clip_reader(store_path: str | Path, split: str) -> Callable[[int, int], np.ndarray]:
    """A reader of a split's clips [start, stop) as uint8 (n, T, H, W, 3), holding the array open."""
    clips = clips_array(store_path, split)
    return lambda start, stop: np.asarray(clips[start:stop])


def read_actions(store_path: str | Path, split: str) -> np.ndarray:
    """The per-frame actions of a split's clips, (N, T, A) float32, checked: every clip has them (a clip
    from a video without actions holds NaN). Raises ValueError naming what is missing."""
    group = open_split(store_path, split)
    if ACTIONS not in group.array_keys():
        raise ValueError(f"{store_path}: the {split} clips have no actions (actions come from BAIR TFRecords "
                         f"or from <video>{ACTION_SUFFIXES[0]} files beside the videos, see docs/datasets.md)")
    actions = np.asarray(group[ACTIONS][:])
    if actions.ndim != 3 or len(actions) != group["clips"].shape[0] or actions.shape[1] != group["clips"].shape[1]:
        raise ValueError(f"{store_path}: {split}/{ACTIONS} has shape {actions.shape}, expected (clips, frames, "
                         f"values) = ({group['clips'].shape[0]}, {group['clips'].shape[1]}, A)")
    missing = np.flatnonzero(~np.isfinite(actions).all(axis=(1, 2)))
    if len(missing):
        raise ValueError(f"{store_path}: {len(missing)} of {len(actions)} {split} clips have no actions (clip "
                         f"{', '.join(map(str, missing[:5]))}{', ...' if len(missing) > 5 else ''}: see the "
                         "manifest for their videos)")
    return actions


def read_video_actions(store_path: str | Path, manifest_path: str | Path, split: str, indices, n_frames: int
                       ) -> np.ndarray:
    """The actions of n_frames frames from the first frame of each clip `indices` (n,) of a split, frame_stride
    apart as in the clips: (n, n_frames, A) float32. Longer than a clip, they are gathered from the other clips
    the manifest lists for the same video, so a video cut into several clips conditions a longer generated
    video. ParamsError (sample.n_frames) naming the first clip whose video has fewer frames of actions."""
    actions = read_actions(store_path, split)
    indices = np.asarray(indices, np.int64)
    if n_frames <= actions.shape[1]:
        return actions[indices, :n_frames]
    stride = store_attrs(store_path)["frame_stride"]
    rows = pd.read_csv(manifest_path, keep_default_na=False)
    rows = rows[rows.split == split].set_index("clip")
    timelines: dict[str, dict[int, np.ndarray]] = {}  # source -> frame index -> action
    out = np.empty((len(indices), n_frames, actions.shape[2]), np.float32)
    for i, index in enumerate(indices):
        source, start = rows.at[index, "source"], int(rows.at[index, "start_frame"])
        if source not in timelines:
            clips = rows[rows.source == source]
            timelines[source] = {int(s) + k * stride: actions[j, k] for j, s in zip(clips.index, clips.start_frame)
                                 for k in range(actions.shape[1])}
        frames = [start + k * stride for k in range(n_frames)]
        have = next((k for k, f in enumerate(frames) if f not in timelines[source]), n_frames)
        if have < n_frames:
            raise ParamsError(f"sample.n_frames: {n_frames} frames of actions are needed, but {split} clip {index} "
                             f"({source}, from frame {start}) has actions for only {have} frames from there (its "
                             "video is too short or not cut into back-to-back clips)")
        out[i] = [timelines[source][f] for f in frames]
    return out


def check_clip_shape(store_path: str | Path, resolution: int, sequence_length: int) -> tuple[int, int, int]:
    """(T, H, W) of the stored clips, which must match data.resolution and data.sequence_length (else a
    model configured from the params would silently disagree with its data)."""
    if "train" not in store_splits(store_path):
        raise ValueError(f"{store_path}: no train split; run the preprocess stage first")
    t, h, w, _ = clips_array(store_path, "train").shape[1:]
    if (h, w) != (resolution,) * 2:
        raise ParamsError(f"data.resolution: params say {resolution} but {store_path} holds "
                          f"{h}x{w} clips; re-run preprocess (dvc repro)")
    if t != sequence_length:
        raise ParamsError(f"data.sequence_length: params say {sequence_length} but {store_path} "
                          f"holds {t}-frame clips; re-run preprocess (dvc repro)")
    return t, h, w
