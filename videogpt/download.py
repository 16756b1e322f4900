"""Fetch public files the evaluation needs: `python -m videogpt.download {i3d,c3d} [--dest DIR]`.

Never called by the default pipeline (FVD and IS are reported as null without weights) and never reaching the
internet in the tests (they serve files from 127.0.0.1); run it by hand on a machine with internet access, then
point `eval.i3d_weights` / `eval.c3d_weights` at the printed path.

i3d: i3d_pretrained_400.pt, VideoGPT's converted TF-Hub I3D (Kinetics-400), ~50.9 MB, a plain torch state dict.
c3d: TGANv2's C3D fine-tuned on UCF-101 for the Inception Score: conv3d_deepnetA_ucf.npz (~313 MB of float32
arrays) and mean2.npz (the mean clip), from the v1.0 release of github.com/rezoo/tgan2 that TGANv2's README links.
No checksum of either file is published anywhere we could find, and none could be computed here (no internet):
they are accepted on the structural check alone (every published key and shape, read without unpickling), and
their sha256 is printed so a user can record it.

About I3D_SHA256, honestly: no project that *publishes* the file records a checksum (VideoGPT, TATS and
torchmetrics download it unchecked). The value below is the Git-LFS SHA256 that Hugging Face shows for a
third-party copy of the file (Space `liruiw/hma`, commit 215dd59cb6e1ebfac7a3ef41a25c31a45edc8938,
path common/fvd/videogpt/i3d_pretrained_400.pt, 50.9 MB). It has not been checked here against the
Google-Drive original (no internet). So a download is accepted only if (a) its sha256 equals I3D_SHA256,
or, with --no-verify-sha256, if (b) it strict-loads into our I3D with exactly the 287 published tensors;
the observed sha256 is always printed so it can be recorded. The structural check is also run in case (a).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from videogpt.fileio import cache_dir, file_sha256, set_default_permissions

I3D_FILENAME = "i3d_pretrained_400.pt"
I3D_SHA256 = "55095f049e706479d48e221adcdb145b2b9dc930ba28b081ed72367ffaa32343"  # see module docstring
I3D_DRIVE_ID = "1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT"  # the id VideoGPT's download.py uses
I3D_URLS = (
    # 1. the original (VideoGPT). confirm=t skips Drive's "cannot scan for viruses" page for large files.
    f"https://drive.google.com/uc?export=download&id={I3D_DRIVE_ID}&confirm=t",
    # 2. TATS commits the same file; torchmetrics' FrechetVideoDistance downloads from this URL.
    "https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt",
    # 3. the copy whose LFS hash is I3D_SHA256 (pinned commit).
    "https://huggingface.co/spaces/liruiw/hma/resolve/215dd59cb6e1ebfac7a3ef41a25c31a45edc8938/"
    "common/fvd/videogpt/i3d_pretrained_400.pt",
)
TGAN2_RELEASE = "https://github.com/rezoo/tgan2/releases/download/v1.0/"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    urls: tuple[str, ...]
    sha256: str | None      # None: no published checksum; the structural check alone decides
    min_bytes: int          # anything smaller is an error page or a truncated file
    check: Callable[[Path], None]


class DownloadError(RuntimeError):
    pass


def _fetch(url: str, dest_dir: Path, remote: RemoteFile, timeout: float) -> tuple[Path, str]:
    """Stream `url` into a temp file in dest_dir; return (temp path, sha256). The caller renames or deletes it."""
    req = urllib.request.Request(url, headers={"User-Agent": "videogpt-download/0.1"})
    fd, tmp = tempfile.mkstemp(prefix="." + remote.name + ".", suffix=".part", dir=dest_dir)
    h, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            ctype = resp.headers.get("Content-Type", "")
            if "text/html" in ctype:
                raise DownloadError("got an HTML page instead of the file (quota, login or virus-scan page)")
            total = int(resp.headers.get("Content-Length") or 0)
            tty = sys.stderr.isatty()
            while block := resp.read(1 << 20):
                out.write(block)
                h.update(block)
                size += len(block)
                if tty:
                    print(f"\r  {size / 1e6:6.1f} / {total / 1e6 if total else float('nan'):.1f} MB", end="",
                          file=sys.stderr)
        print(f"{chr(13) if tty else ''}  {size / 1e6:.1f} MB received", file=sys.stderr)
        if size < remote.min_bytes:
            raise DownloadError(f"only {size} bytes received (expected at least {remote.min_bytes})")
        return Path(tmp), h.hexdigest()
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_i3d(path: Path) -> None:
    """Strict-load into the I3D (weights_only unpickling) and count the published tensors."""
    import torch

    from videogpt.metrics.i3d import N_PUBLISHED_TENSORS, load_i3d

    load_i3d(path)  # raises I3DWeightsError on unsafe pickles, missing/unexpected keys, wrong shapes
    n = len(torch.load(path, map_location="cpu", weights_only=True))
    if n != N_PUBLISHED_TENSORS:
        raise DownloadError(f"{path}: {n} tensors, the published file has {N_PUBLISHED_TENSORS}")


def _check_c3d_weights(path: Path) -> None:
    from videogpt.metrics.c3d import read_weights
    read_weights(path)   # every published key and shape, np.load(allow_pickle=False)


def _check_c3d_mean(path: Path) -> None:
    from videogpt.metrics.c3d import read_mean
    read_mean(path)


ASSETS: dict[str, tuple[RemoteFile, ...]] = {
    "i3d": (RemoteFile(I3D_FILENAME, I3D_URLS, I3D_SHA256, 40_000_000, _check_i3d),),  # ~12.7M float32 values
    "c3d": (RemoteFile("conv3d_deepnetA_ucf.npz", (TGAN2_RELEASE + "conv3d_deepnetA_ucf.npz",), None, 300_000_000,
                       _check_c3d_weights),                                           # ~78M float32 values
            RemoteFile("mean2.npz", (TGAN2_RELEASE + "mean2.npz",), None, 4_000_000, _check_c3d_mean)),
}


def _download_one(remote: RemoteFile, dest_dir: Path, *, force: bool, verify_sha256: bool, timeout: float) -> Path:
    """The path of a checked `remote.name` in dest_dir, fetched from its first source that serves a good file."""
    target = dest_dir / remote.name
    verify = verify_sha256 and remote.sha256 is not None
    if target.is_file() and not force:
        digest = file_sha256(target)
        if verify and digest != remote.sha256:
            raise DownloadError(f"{target}: exists but its sha256 {digest} != expected {remote.sha256}; "
                                "delete it, or pass --force / --no-verify-sha256")
        remote.check(target)
        print(f"{target}: present, sha256 {digest}")
        return target
    errors = []
    for url in remote.urls:
        print(f"fetching {url}", file=sys.stderr)
        try:
            tmp, digest = _fetch(url, dest_dir, remote, timeout)
        except (urllib.error.URLError, OSError, DownloadError) as e:  # HTTPError and timeouts included
            errors.append(f"{url}: {e}")
            continue
        try:
            if verify and digest != remote.sha256:
                raise DownloadError(f"sha256 {digest} != expected {remote.sha256}")
            remote.check(tmp)
            set_default_permissions(tmp)  # mkstemp made it private
            os.replace(tmp, target)  # atomic: a reader never sees a partial file
        except Exception as e:
            tmp.unlink(missing_ok=True)
            errors.append(f"{url}: {e}")
            continue
        pinned = "" if remote.sha256 else " (no published checksum: record this one)"
        print(f"{target}: sha256 {digest}{pinned}")
        return target
    raise DownloadError(
        f"could not fetch {remote.name} from any source (offline? blocked? moved?):\n  " + "\n  ".join(errors)
        + f"\nDownload it by hand and place it at {target}. If a source served a file whose only fault was the "
          "sha256, check it and rerun with --no-verify-sha256 (structure is still checked).")


def download(what: str, dest: str | Path | None = None, *, force: bool = False, verify_sha256: bool = True,
             timeout: float = 60.0) -> Path:
    """Fetch and check every file of `what` (a key of ASSETS) into `dest` (default cache_dir()); return the path
    to give the params (`eval.i3d_weights` / `eval.c3d_weights`): the first file."""
    if what not in ASSETS:
        raise ValueError(f"unknown download {what!r}; choose from {', '.join(ASSETS)}")
    dest_dir = Path(dest).expanduser() if dest is not None else cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    paths = [_download_one(r, dest_dir, force=force, verify_sha256=verify_sha256, timeout=timeout)
             for r in ASSETS[what]]
    return paths[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m videogpt.download", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=list(ASSETS),
                    help="i3d: i3d_pretrained_400.pt for FVD (eval.i3d_weights); c3d: TGANv2's UCF-101 C3D and "
                         "its mean clip for the Inception Score (eval.c3d_weights)")
    ap.add_argument("--dest", default=None, help=f"target folder (default $VIDEOGPT_CACHE or {cache_dir()})")
    ap.add_argument("--force", action="store_true", help="download again even if the file exists")
    ap.add_argument("--no-verify-sha256", action="store_true",
                    help="accept a file whose sha256 differs, if it passes the structural check")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per network operation")
    args = ap.parse_args(argv)
    try:
        path = download(args.what, args.dest, force=args.force, verify_sha256=not args.no_verify_sha256,
                        timeout=args.timeout)
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
