"""Where the inputs come from: the types every data.format shares and the helpers that find files.

A *source* turns data.source into a sorted list of picklable SourceItems (path, split, label, reader); a
*reader* (named by SourceItem.reader, see videogpt/data/formats.py) turns one item into Videos. This module
holds those types, the walk and split helpers the format modules build on, and the plain-videos format
itself (discover_videos, read_video_file).

Which files count as videos: those with an extension in VIDEO_EXTENSIONS are decoded. Every other file
(hidden files aside) is listed in rejected.csv as "not a video" without being opened, so nothing in the
input folder disappears silently and no one waits for ffmpeg to fail on thousands of .txt/.jpg files.
A video file holding fewer than two distinct frames (a one-frame GIF or MP4) is rejected as "a still
image: 1 frame" (ffmpeg_io.check_not_still): at a constant rate it would decode into clips of one picture.

Actions: a video may come with its per-frame actions in a sidecar file beside it, named like the video with
`.actions.npy` or `.actions.csv` in place of its extension (`walk/00003.mp4` -> `walk/00003.actions.npy`):
a 2-D float array (NumPy .npy), or comma-separated numbers without a header (.csv), with one row per frame of
the video and one column per action value, finite. Row i is the action taken at frame i. Preprocess cuts the
actions exactly like the frames (frame_stride, clip_stride) and stores them per clip (clip_store). A video
whose sidecar is unreadable, has another number of rows than the decoded video has frames, or comes with a
data.fps that resamples the video (which frame an action belongs to would then be a guess) is rejected with
the reason; a sidecar without its video is listed as "actions file without a video". Videos without a
sidecar get no actions (NaN in the store where others have them).

Object storage: data.source may be an fsspec URL (s3://bucket/videos, gs://..., with the `cluster` extra) of
the same layout of class folders. Its files are listed once and each video is streamed to ffmpeg (never
copied whole to local disk); actions sidecars are read from local folders only.

Containment: nothing outside data.source is read. A symlink (file or folder) below it that leads outside
it is listed in rejected.csv as "outside the input root" and neither followed nor decoded (DVC tracks
data.source, so such a file would be an untracked input); manifest paths are relative to data.source.
One place outside is allowed: the DVC cache of the repository holding data.source (wherever its
`cache.dir` puts it), because with `cache.type: symlink` DVC checks every tracked file out as a link into
it. (Hardlinks and reflinks are plain files: they never lead out.)
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from videogpt import storage
from videogpt.config import DataParams, ParamsError
from videogpt.data.ffmpeg_io import Stream, VideoError, check_not_still, decode_video, probe

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .gif .mpg .mpeg .m2v .wmv .asf .flv .f4v .ogv .3gp .3g2 .ts .mts .m2ts "
    ".vob .mxf .dv .y4m".split())
SPLITS = ("train", "test")
UNLABELED = -1
OUTSIDE_ROOT = "outside the input root"
ACTIONS = "actions"  # the Video.extras key (and clip-store array) of per-frame actions
ACTION_SUFFIXES = (".actions.npy", ".actions.csv")


@dataclass(frozen=True)
class SourceItem:
    path: str             # relative to the source root, '/'-separated
    split: str            # "train" or "test"
    label: int            # index into class_names; UNLABELED = -1
    reader: str = "video"  # key of formats.READERS


@dataclass(frozen=True)
class Rejection:
    source: str
    split: str
    reason: str
    detail: str = ""


@dataclass
class Source:
    root: Path | str              # a local folder, or the URL of a folder in object storage
    items: list[SourceItem]       # in output order: train first, then test, each sorted by path
    class_names: list[str]
    rejected: list[Rejection]     # known to be unusable without decoding
    format: str = "videos"        # the data.format that produced it (auto resolved)
    ignored: dict[str, int] = field(default_factory=dict)  # files deliberately left out, by reason


def escapes(root: Path, path: Path) -> str | None:
    """Where `path` really is, if that is outside `root` (through a symlink on the way) and outside the DVC
    cache of the repository holding `root`; None if inside either."""
    real = os.path.realpath(path)
    if Path(real).is_relative_to(os.path.realpath(root)):
        return None
    cache = dvc_cache_dir(os.path.abspath(root))
    return None if cache is not None and Path(real).is_relative_to(cache) else real


@functools.lru_cache(maxsize=None)
def dvc_cache_dir(root: str) -> str | None:
    """The resolved local cache folder of the DVC repository holding `root` (absolute), as DVC's own config
    gives it (cache.dir at any config level, relative paths resolved, default .dvc/cache); None outside a
    DVC repository. Asked only when a link leads out of `root`, so other runs never import DVC."""
    try:
        from dvc.exceptions import NotDvcRepoError
        from dvc.repo import Repo
    except ImportError:  # the library without DVC: no DVC cache to allow
        return None
    try:
        with Repo(Repo.find_root(root)) as repo:
            cache = repo.cache.local_cache_dir
    except NotDvcRepoError:
        return None
    return os.path.realpath(cache) if cache else None


def walk_files(root: Path) -> tuple[list[str], list[Rejection]]:
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
            rejected.append(Rejection(rel, split_folder(rel), OUTSIDE_ROOT, f"links to {target}"))
        return name[0] != "." and not target

    for folder, subfolders, names in os.walk(root, onerror=on_error, followlinks=True):
        subfolders[:] = [d for d in subfolders if keep(folder, d)]
        rel_folder = Path(folder).relative_to(root)
        files += [(rel_folder / name).as_posix() for name in names if keep(folder, name)]
    return sorted(files), sorted(rejected, key=lambda r: r.source)  # not in the file system's listing order


def remote_files(url: str) -> tuple[list[str], list[list]]:
    """The non-hidden files below a folder in object storage: (relative paths, sorted; [path, size, version]
    per file, the version being its ETag or modification time, whichever the store gives)."""
    fs, path = storage.filesystem(url)
    found = fs.find(path, detail=True)
    files, stats = [], []
    for name in sorted(found):
        rel = name[len(path):].strip("/")
        if rel and not any(part.startswith(".") for part in rel.split("/")):
            info = found[name]
            version = info.get("ETag") or info.get("LastModified") or info.get("mtime")
            files.append(rel)
            stats.append([rel, info.get("size"), str(version)])
    return files, stats


def file_stats(root: Path | str) -> list[list]:
    """[path, size, version] of every input file below root (local: mtime in ns): what a rerun compares."""
    if storage.is_url(root):
        return remote_files(str(root))[1]

    def stat(f: str) -> list:
        try:
            st = (Path(root) / f).stat()
            return [f, st.st_size, st.st_mtime_ns]
        except OSError:
            return [f, None, None]
    return [stat(f) for f in walk_files(Path(root))[0]]


def is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def sidecar_video_stem(path: str) -> str | None:
    """For an actions sidecar 'a/b.actions.npy' the path of its video without extension, 'a/b'; else None."""
    return next((path[:-len(suffix)] for suffix in ACTION_SUFFIXES if path.endswith(suffix)), None)


def actions_sidecar(video: Path) -> Path | None:
    """The actions file beside `video` (see the module docstring), if there is one."""
    return next((p for p in (video.with_suffix(s) for s in ACTION_SUFFIXES) if p.is_file()), None)


def load_actions(path: Path, n_frames: int) -> np.ndarray:
    """The actions (n_frames, A) float32 of a sidecar file; VideoError (the reason for rejected.csv) when the
    file is unreadable, not a 2-D array of finite numbers, or not one row per frame."""
    try:
        if path.suffix == ".npy":
            actions = np.load(path, allow_pickle=False)
        else:
            actions = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise VideoError("bad actions file", f"{path.name}: {e}") from None
    if actions.ndim != 2 or actions.shape[1] < 1 or not np.issubdtype(actions.dtype, np.number):
        raise VideoError("bad actions file", f"{path.name}: shape {actions.shape} {actions.dtype}, expected "
                                             "(frames, action values) numbers")
    if not np.isfinite(actions).all():
        raise VideoError("bad actions file", f"{path.name}: holds NaN or infinite values")
    if len(actions) != n_frames:
        raise VideoError("actions do not match the video",
                         f"{path.name} has {len(actions)} rows, the video {n_frames} frames")
    return actions.astype(np.float32)


def split_folder(path: str) -> str:
    """'train' for 'train/cat/x.mp4', '' for files outside the split folders."""
    head, _, rest = path.partition("/")
    return head if rest and head in SPLITS else ""


def split_files(files: list[str], ratio: float, seed: int) -> dict[str, str]:
    """Deterministic random test fraction (at least one file); the same seed and files give the same split."""
    n_test = max(1, round(len(files) * ratio))
    test = set(np.random.default_rng(seed).permutation(len(files))[:n_test].tolist())
    return {f: "test" if i in test else "train" for i, f in enumerate(files)}


def uses_split_folders(root: Path | str, params: DataParams, files: list[str] | None = None) -> bool:
    """True for the <source>/train + <source>/test layout; checks data.split_ratio fits the layout. A folder
    in object storage exists only through its files (given as `files`)."""
    if files is None:
        present = [s for s in SPLITS if (root / s).is_dir()]
    else:
        present = [s for s in SPLITS if any(f.startswith(s + "/") for f in files)]
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


def labelled_items(split_of: dict[str, str], within_split: dict[str, str],
                   reader: str = "video") -> tuple[list[SourceItem], list[str]]:
    """(items in output order: train first, then test, each sorted by path; the class names). The class of a
    path is the first folder of its path below its split root (`within_split`); paths directly in the split
    root are unlabeled."""
    class_of = {p: rel.split("/", 1)[0] if "/" in rel else None for p, rel in within_split.items()}
    class_names = sorted(set(class_of.values()) - {None})
    label = {name: i for i, name in enumerate(class_names)}
    order = sorted(split_of, key=lambda p: (SPLITS.index(split_of[p]), p))
    return [SourceItem(p, split_of[p], label.get(class_of[p], UNLABELED), reader) for p in order], class_names


def require_no_fps(params: DataParams, fmt: str, why: str) -> None:
    """data.fps resamples decoded videos; a format whose frames carry no frame rate (`why`) cannot honour it."""
    if params.fps is not None:
        raise ParamsError(f"data.fps: must be null for data.format {fmt} ({why}), got {params.fps}")


def discover_videos(params: DataParams) -> Source:
    """Layout <source>/{train,test}/[class/]*.mp4, or <source>/[class/]*.mp4 split by data.split_ratio.
    The class of a file is the first folder below its split root (or below <source>); files directly in
    it are unlabeled."""
    remote = storage.is_url(params.source)
    if remote:
        root, (files, _) = params.source.rstrip("/"), remote_files(params.source)
        rejected = []
        split_folders = uses_split_folders(root, params, files)
    else:
        root = Path(params.source)
        split_folders = uses_split_folders(root, params)
        files, rejected = walk_files(root)
    videos = [f for f in files if is_video(f)]
    video_stems = {v.rsplit(".", 1)[0] for v in videos}
    sidecars = {f for f in files if sidecar_video_stem(f) in video_stems}
    if remote:
        rejected += [Rejection(f, split_folder(f), "actions file in object storage",
                               "actions sidecars are read from local folders only") for f in sorted(sidecars)]
    rejected += [Rejection(f, split_folder(f), "actions file without a video",
                           f"no video named {Path(sidecar_video_stem(f)).name}.* beside it")
                 for f in files if sidecar_video_stem(f) is not None and f not in sidecars]
    files = [f for f in files if sidecar_video_stem(f) is None]
    if split_folders:
        split_of = {f: split_folder(f) for f in videos if split_folder(f)}
        within_split = {f: f.split("/", 1)[1] for f in split_of}
        rejected += [Rejection(f, "", "outside train/ and test/") for f in videos if f not in split_of]
    else:
        split_of = split_files(videos, params.split_ratio, params.split_seed)
        within_split = {f: f for f in videos}
    rejected += [Rejection(f, split_folder(f), "not a video", f"'{Path(f).suffix}' is not a video extension")
                 for f in files if not is_video(f)]
    if not split_of:
        raise ParamsError(f"data.source: no video files found in '{root}' "
                          f"(extensions: {' '.join(sorted(VIDEO_EXTENSIONS))})")
    if "train" not in split_of.values():
        raise ParamsError(f"data.split_ratio: {params.split_ratio} leaves no training video out of {len(split_of)}")

    items, class_names = labelled_items(split_of, within_split, "remote_video" if remote else "video")
    return Source(root, items, class_names, rejected)



@dataclass
class Video:
    frames: np.ndarray     # (F, S, S, 3) uint8
    fps: float | None
    width: int             # before scaling/cropping
    height: int
    name: str | None = None  # set when one item holds several videos: manifest source "<path>#<name>"
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame side data, (F, ...) each


def read_video_file(path: Path, params: DataParams) -> Video:
    """A video file, with the actions of its sidecar file if it has one (see the module docstring)."""
    return read_video(path, params, actions_sidecar(path))


def read_remote_video(url: str, params: DataParams) -> Video:
    """A video file in object storage, streamed to ffmpeg."""
    fs, path = storage.filesystem(url)
    return read_video(Stream(lambda: fs.open(path, "rb"), url), params)


def read_video(path: Path | Stream, params: DataParams, sidecar: Path | None = None) -> Video:
    """Decode one video (a local file or a Stream), with the actions of `sidecar` if given."""
    info = probe(path, timeout=params.decode_timeout)
    if sidecar is not None and params.fps is not None and params.fps != info.fps:
        raise VideoError("actions with fps resampling",
                         f"data.fps={params.fps:g} resamples this {info.fps:g} fps video, so which frame each row "
                         f"of {sidecar.name} belongs to would be a guess; set data.fps: null or resample the "
                         "actions to match")
    frames = decode_video(path, params.resolution, fps=params.fps, timeout=params.decode_timeout)
    check_not_still(path, frames, timeout=params.decode_timeout)
    extras = {ACTIONS: load_actions(sidecar, len(frames))} if sidecar is not None else {}
    return Video(frames, params.fps or info.fps, info.width, info.height, extras=extras)


