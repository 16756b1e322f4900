"""Fetch public files the evaluation needs: `python -m videogpt.download i3d [--dest DIR]`.

Never called by the tests or by the default pipeline (FVD is reported as null without weights); run it by
hand on a machine with internet access, then point `eval.i3d_weights` at the printed path.

i3d_pretrained_400.pt: VideoGPT's converted TF-Hub I3D (Kinetics-400), ~50.9 MB, a plain torch state dict.

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
from pathlib import Path

from videogpt.fileio import file_sha256, set_default_permissions

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
MIN_BYTES = 40_000_000  # ~12.7M float32 values; anything much smaller is an error page or a truncated file


class DownloadError(RuntimeError):
    pass


def cache_dir() -> Path:
    """$VIDEOGPT_CACHE, else ~/.cache/videogpt."""
    env = os.environ.get("VIDEOGPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "videogpt"


def _fetch(url: str, dest_dir: Path, timeout: float) -> tuple[Path, str]:
    """Stream `url` into a temp file in dest_dir; return (temp path, sha256). The caller renames or deletes it."""
    req = urllib.request.Request(url, headers={"User-Agent": "videogpt-download/0.1"})
    fd, tmp = tempfile.mkstemp(prefix="." + I3D_FILENAME + ".", suffix=".part", dir=dest_dir)
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
        if size < MIN_BYTES:
            raise DownloadError(f"only {size} bytes received (expected ~50.9 MB)")
        return Path(tmp), h.hexdigest()
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_structure(path: Path) -> None:
    """Strict-load into the I3D (weights_only unpickling) and count the published tensors."""
    import torch

    from videogpt.metrics.i3d import N_PUBLISHED_TENSORS, load_i3d

    load_i3d(path)  # raises I3DWeightsError on unsafe pickles, missing/unexpected keys, wrong shapes
    n = len(torch.load(path, map_location="cpu", weights_only=True))
    if n != N_PUBLISHED_TENSORS:
        raise DownloadError(f"{path}: {n} tensors, the published file has {N_PUBLISHED_TENSORS}")


def download_i3d(dest: str | Path | None = None, *, force: bool = False, verify_sha256: bool = True,
                 urls=I3D_URLS, timeout: float = 60.0) -> Path:
    """Return the path of a verified i3d_pretrained_400.pt in `dest` (default cache_dir()), fetching it if needed."""
    dest_dir = Path(dest).expanduser() if dest is not None else cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / I3D_FILENAME
    if target.is_file() and not force:
        digest = file_sha256(target)
        if verify_sha256 and digest != I3D_SHA256:
            raise DownloadError(f"{target}: exists but its sha256 {digest} != expected {I3D_SHA256}; "
                                "delete it, or pass --force / --no-verify-sha256")
        _check_structure(target)
        print(f"{target}: present, sha256 {digest}")
        return target
    errors = []
    for url in urls:
        print(f"fetching {url}", file=sys.stderr)
        try:
            tmp, digest = _fetch(url, dest_dir, timeout)
        except (urllib.error.URLError, OSError, DownloadError) as e:  # HTTPError and timeouts included
            errors.append(f"{url}: {e}")
            continue
        try:
            if verify_sha256 and digest != I3D_SHA256:
                raise DownloadError(f"sha256 {digest} != expected {I3D_SHA256}")
            _check_structure(tmp)
            set_default_permissions(tmp)  # mkstemp made it private
            os.replace(tmp, target)  # atomic: a reader never sees a partial file
        except Exception as e:
            tmp.unlink(missing_ok=True)
            errors.append(f"{url}: {e}")
            continue
        print(f"{target}: sha256 {digest}")
        return target
    raise DownloadError(
        "could not fetch i3d_pretrained_400.pt from any source (offline? blocked? moved?):\n  "
        + "\n  ".join(errors)
        + f"\nDownload it by hand, place it at {target} and set eval.i3d_weights. If a source served a file "
          "whose only fault was the sha256, check it and rerun with --no-verify-sha256 (structure is still checked).")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m videogpt.download", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["i3d"], help="i3d: i3d_pretrained_400.pt for FVD")
    ap.add_argument("--dest", default=None, help=f"target folder (default $VIDEOGPT_CACHE or {cache_dir()})")
    ap.add_argument("--force", action="store_true", help="download again even if the file exists")
    ap.add_argument("--no-verify-sha256", action="store_true",
                    help="accept a file whose sha256 differs, if it passes the structural check")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per network operation")
    args = ap.parse_args(argv)
    try:
        path = download_i3d(args.dest, force=args.force, verify_sha256=not args.no_verify_sha256,
                            timeout=args.timeout)
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
