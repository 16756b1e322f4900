"""Where large artifacts live: the one owner of storage locations, immutable prefixes, completion markers and
pointer files.

A location is a local path or an fsspec URL (s3://bucket/key, gs://..., file:///abs/path). Locations are
strings joined with "/" (never pathlib, which turns "s3://b/k" into "s3:/b/k"). Credentials come only from
each store's standard environment and config files (AWS_* variables and ~/.aws for s3fs,
GOOGLE_APPLICATION_CREDENTIALS for gcsfs); nothing here takes, stores or prints them.

With `storage.root` set, a stage writes its outputs under a new prefix

    <root>/<stage>/<key>/...          key = content_hash(what the outputs depend on)

then `_COMPLETE.json` in it, last (what was written: every object's size and sha256, the key, counts), and
only then the small local pointer file that dvc.yaml declares as the stage's out ({"url", "hash", "counts"}).
Same inputs and params give the same prefix, which is never written again once complete; a prefix without
its marker is an interrupted write, which readers refuse (IncompleteError names it).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

MARKER = "_COMPLETE.json"
POINTER_VERSION = 1


class IncompleteError(FileNotFoundError):
    """A prefix without _COMPLETE.json: its writer did not finish (or is still running)."""


def is_url(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def local_path(location: str | os.PathLike) -> str | None:
    """The local path a location names (a plain path or a file:// URL), or None for a remote URL."""
    location = str(location)
    if location.startswith("file://"):
        return location[len("file://"):]
    return None if is_url(location) else location


def absolute(location: str | os.PathLike) -> str:
    """The location as another process (a Ray worker) can open it whatever its working folder: a URL as it is,
    a local path made absolute."""
    location = str(location)
    return location if is_url(location) else os.path.abspath(location)


def join(base: str | os.PathLike, *parts: str) -> str:
    """base/part/...: '/'-joined strings, the URL's scheme and bucket kept intact ("s3://b" + "k" -> "s3://b/k")."""
    out = str(base)
    for part in parts:
        out = out.rstrip("/") + "/" + str(part).strip("/")
    return out


def location_problem(location: str) -> str | None:
    """Why a location cannot be used here (an unknown scheme, its fsspec package not installed), or None."""
    if not location.strip():
        return "empty location"
    if local_path(location) is not None:
        return None
    import fsspec
    protocol = location.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        return f"{location}: fsspec knows no protocol '{protocol}'"
    except ImportError as e:
        return f"{location}: the package for {protocol}:// is not installed ({e}); pip install -e '.[cluster]'"
    return None


def filesystem(location: str | os.PathLike):
    """(fsspec filesystem, path within it) for a location. The filesystem reads its credentials from the
    environment as its own package documents; none are passed here."""
    import fsspec
    path = local_path(location)
    if path is not None:
        return fsspec.filesystem("file"), os.path.abspath(path)
    return fsspec.core.url_to_fs(str(location))


def zarr_store(location: str | os.PathLike, *, read_only: bool = False):
    """What zarr.open_group takes for a location: the path itself when local (zarr's LocalStore, as always),
    else an FsspecStore on the URL."""
    path = local_path(location)
    if path is not None:
        return path
    import zarr
    return zarr.storage.FsspecStore.from_url(str(location), read_only=read_only)


def content_hash(inputs: Any) -> str:
    """sha256 (hex) of the canonical JSON of `inputs` (what a stage's outputs depend on)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def stage_prefix(root: str | os.PathLike, stage: str, key: str) -> str:
    """The immutable prefix of a stage's outputs for inputs with content hash `key`."""
    return join(root, stage, key)


def object_hashes(prefix: str) -> dict[str, dict]:
    """{path relative to prefix: {"bytes", "sha256"}} of every object under prefix (read back once)."""
    fs, path = filesystem(prefix)
    out = {}
    for name in sorted(fs.find(path)):
        digest, size = hashlib.sha256(), 0
        with fs.open(name, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
                size += len(block)
        out[name[len(path):].lstrip("/")] = {"bytes": size, "sha256": digest.hexdigest()}
    return out


def is_complete(prefix: str) -> bool:
    fs, path = filesystem(prefix)
    return fs.exists(join(path, MARKER))


def write_marker(prefix: str, *, key: str, counts: dict, extra: dict | None = None) -> dict:
    """Hash every object under prefix and write prefix/_COMPLETE.json, the last object a stage writes."""
    fs, path = filesystem(prefix)
    marker = {"key": key, "counts": counts, "objects": object_hashes(prefix), **(extra or {})}
    marker["hash"] = content_hash(marker["objects"])  # one digest of everything written
    fs.pipe_file(join(path, MARKER), json.dumps(marker, indent=1, sort_keys=True).encode())
    return marker


def read_marker(prefix: str) -> dict:
    """The marker of a complete prefix; IncompleteError naming the prefix when it has none."""
    fs, path = filesystem(prefix)
    try:
        return json.loads(fs.cat_file(join(path, MARKER)))
    except FileNotFoundError:
        raise IncompleteError(f"{prefix}: no {MARKER}, so its writer did not finish; refusing to read it (run the "
                              "stage that writes it again)") from None


def remove(prefix: str) -> None:
    """Delete everything under prefix (the leftovers of an interrupted write)."""
    fs, path = filesystem(prefix)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_pointer(pointer_path: str | os.PathLike, prefix: str, marker: dict) -> None:
    """The small local file dvc.yaml tracks: where the outputs are, their hash and counts. Written after the
    marker, atomically (tmp + rename), in place of whatever was there (a local store of a run without
    storage.root)."""
    import shutil

    from videogpt.fileio import write_json
    if os.path.isdir(pointer_path) and not os.path.islink(pointer_path):
        shutil.rmtree(pointer_path)
    write_json(pointer_path, {"pointer": POINTER_VERSION, "url": prefix, "key": marker["key"],
                              "hash": marker["hash"], "counts": marker["counts"]})


def is_pointer(path: str | os.PathLike) -> bool:
    """A local pointer file (not a directory, not a URL)."""
    return not is_url(path) and os.path.isfile(path)


def read_pointer(pointer_path: str | os.PathLike) -> dict:
    """The pointer's content, checked against the prefix's marker (IncompleteError if it has none, ValueError
    if the prefix holds other outputs than the pointer records)."""
    with open(pointer_path, encoding="utf-8") as f:
        pointer = json.load(f)
    if not isinstance(pointer, dict) or pointer.get("pointer") != POINTER_VERSION:
        raise ValueError(f"{pointer_path}: not a storage pointer file")
    marker = read_marker(pointer["url"])
    if marker["hash"] != pointer["hash"]:
        raise ValueError(f"{pointer_path}: {pointer['url']} holds outputs with hash {marker['hash'][:12]}, the "
                         f"pointer records {pointer['hash'][:12]}; run the stage that writes it again")
    return pointer


def resolve(location: str | os.PathLike, member: str = "") -> str:
    """Where to read an artifact named by `location`: a pointer file leads to <url>/<member> of its prefix,
    which must be complete (see read_pointer); anything else (a local store, a URL) is read where it is."""
    if is_pointer(location):
        url = read_pointer(location)["url"]
        return join(url, member) if member else url
    return str(location)
