"""data.format webdataset: videos in WebDataset tar shards, as video2dataset writes them.

    data.source: s3://bucket/kinetics/{00000..00099}.tar   (or a local pattern, one .tar, or a folder of .tar)

Each shard holds samples `<key>.mp4` + `<key>.json` (+ `<key>.txt` and others, ignored). A sample's label is
the value of its JSON's `data.label_key` (class names: the distinct values, sorted), its split the value of
`data.split_key` ("train" or "test"), or, with data.split_key null, the seeded random data.split_ratio split.
The manifest names a video `<shard>/<member>` (e.g. `00003.tar/00000017.mp4`).

Nothing is copied to local disk: discovery reads the tar headers and the small JSON members; decoding streams
each video member's bytes from the shard (a local file or an fsspec file) to ffmpeg.
"""
from __future__ import annotations

import functools
import io
import json
import re
import tarfile
from pathlib import Path

from videogpt import storage
from videogpt.config import DataParams, ParamsError
from videogpt.data.ffmpeg_io import Stream
from videogpt.data.sources import (SPLITS, UNLABELED, Rejection, Source, SourceItem, Video, is_video, read_video,
                                   remote_files, split_files, walk_files)

TAR = ".tar"
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def is_shard_pattern(source: str) -> bool:
    """A brace pattern or a single .tar: the webdataset format whatever data.format says."""
    return bool(_RANGE.search(source)) or source.rstrip("/").endswith(TAR)


def expand_braces(pattern: str) -> list[str]:
    """'{00000..00002}.tar' -> ['00000.tar', '00001.tar', '00002.tar']: numeric ranges, zero-padded to the
    width of the first bound (WebDataset's convention); several ranges expand as a product."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    first, last = match.group(1), match.group(2)
    numbers = range(int(first), int(last) + 1)
    return [expanded for n in numbers
            for expanded in expand_braces(pattern[:match.start()] + str(n).zfill(len(first)) + pattern[match.end():])]


def shard_locations(source: str) -> tuple[str, list[str]]:
    """(base folder, shard names relative to it) of data.source: a pattern in the last path component,
    one .tar, or a folder holding .tar files (all of them, sorted)."""
    source = source.rstrip("/")
    if is_shard_pattern(source):
        base, _, name = source.rpartition("/")
        if _RANGE.search(base):
            raise ParamsError(f"data.source: '{source}': a {{a..b}} range is allowed in the file name only")
        return base, expand_braces(name)
    files = remote_files(source)[0] if storage.is_url(source) else walk_files(storage.local_path(source))[0]
    return source, [f for f in files if f.endswith(TAR)]


def _samples(shard: str) -> dict[str, dict]:
    """{key: {"video": member name, "json": parsed JSON or None}} of one shard, reading only headers and
    the JSON members. Raises ParamsError naming the shard if it is missing or not a tar."""
    fs, path = storage.filesystem(shard)
    samples: dict[str, dict] = {}
    try:
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, name = member.name.rpartition("/")
                key, _, ext = name.partition(".")
                sample = samples.setdefault(f"{folder}/{key}" if folder else key, {"video": None, "json": None})
                if ext == "json":
                    sample["json"] = json.loads(tar.extractfile(member).read())
                elif is_video(member.name) and sample["video"] is None:
                    sample["video"] = member.name
    except FileNotFoundError:
        raise ParamsError(f"data.source: shard '{shard}' does not exist") from None
    except (tarfile.TarError, ValueError) as e:
        raise ParamsError(f"data.source: '{shard}' is not a readable tar shard ({e})") from None
    return samples


def discover_webdataset(params: DataParams) -> Source:
    base, shards = shard_locations(params.source)
    if not shards:
        raise ParamsError(f"data.source: no {TAR} shards in '{params.source}'")
    if params.split_key is None and params.split_ratio is None:
        raise ParamsError("data.split_key: the shards' samples need a split: set data.split_key (the JSON key "
                          "holding train/test) or data.split_ratio (a random test fraction)")
    if params.split_key is not None and params.split_ratio is not None:
        raise ParamsError(f"data.split_ratio: must be null when data.split_key is set (got {params.split_ratio})")
    found, rejected, ignored = {}, [], 0  # path -> (split or None, label name or None)
    for shard in shards:
        for key, sample in sorted(_samples(storage.join(base, shard)).items()):
            if sample["video"] is None:
                ignored += 1
                continue
            path, meta = f"{shard}/{sample['video']}", sample["json"] or {}
            split = meta.get(params.split_key) if params.split_key else None
            if params.split_key and split not in SPLITS:
                rejected.append(Rejection(path, "", "no train/test split",
                                          f"data.split_key '{params.split_key}' is {split!r} in {key}.json"))
                continue
            label = meta.get(params.label_key) if params.label_key else None
            if params.label_key and label is None:
                rejected.append(Rejection(path, split or "", "no label",
                                          f"data.label_key '{params.label_key}' missing from {key}.json"))
                continue
            found[path] = (split, None if label is None else str(label))
    if not found:
        raise ParamsError(f"data.source: no video samples in the {len(shards)} shards of '{params.source}'")
    split_of = ({p: s for p, (s, _) in found.items()} if params.split_key
                else split_files(sorted(found), params.split_ratio, params.split_seed))
    class_names = sorted({label for _, label in found.values() if label is not None})
    index = {name: i for i, name in enumerate(class_names)}
    order = sorted(found, key=lambda p: (SPLITS.index(split_of[p]), p))
    items = [SourceItem(p, split_of[p], index.get(found[p][1], UNLABELED), "tar_member") for p in order]
    root = base if storage.is_url(base) else Path(storage.local_path(base) or ".")
    return Source(root, items, class_names, rejected,
                  ignored={"samples without a video": ignored} if ignored else {})


class _Member(io.RawIOBase):
    """`size` bytes from `offset` of an open binary file: one tar member, read as a stream."""

    def __init__(self, f, offset: int, size: int):
        f.seek(offset)
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.f.read(min(len(buffer), self.left))
        buffer[:len(data)] = data
        self.left -= len(data)
        return len(data)

    def close(self) -> None:
        self.f.close()
        super().close()


@functools.lru_cache(maxsize=8)
def _member_offsets(shard: str) -> dict[str, tuple[int, int]]:
    """{member name: (data offset, size)} of a shard, from its headers (once per shard and process)."""
    fs, path = storage.filesystem(shard)
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}


def read_tar_member(location: str, params: DataParams) -> Video:
    """The video `<shard>.tar/<member>`, streamed from its shard to ffmpeg."""
    shard, _, member = str(location).partition(TAR + "/")
    shard += TAR
    offset, size = _member_offsets(shard)[member]
    fs, path = storage.filesystem(shard)
    return read_video(Stream(lambda: _Member(fs.open(path, "rb"), offset, size), str(location)), params)
