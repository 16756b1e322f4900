"""Atomic writes: a reader (or DVC) never sees a half-written file, and the file it finally sees has the
permissions of any new file (0o666 minus the umask), whoever wrote it."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def current_umask() -> int:
    """The process umask. Read from /proc where it can be: os.umask can only read it by setting it, and a
    zero umask seen for a moment by another thread (zarr's I/O threads) would create world-writable files."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def set_default_permissions(path: str | Path) -> None:
    """Give `path` the mode a newly created file gets: 0o666 minus the umask (mkstemp makes 0o600 files)."""
    os.chmod(path, 0o666 & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp file beside `path` for any writer (ffmpeg, PIL, safetensors, numpy, text).

    If the block succeeds, the temp file gets default permissions and is renamed onto `path`; if it
    fails, the temp file is deleted and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        set_default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty folder `<path>.tmp` to fill; if the block succeeds it replaces `path` (a reader sees the
    old folder or the new one, never a mix); if it fails it is deleted."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")  # exactly these bytes, on every OS


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def cache_dir() -> Path:
    """The user's cache of downloads and content-addressed results: $VIDEOGPT_CACHE, else ~/.cache/videogpt."""
    env = os.environ.get("VIDEOGPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "videogpt"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
