"""data.format ucf101: the official UCF-101 release and its official train/test split lists.

Layout (data.source is the folder holding both, or the UCF-101/ folder itself with the lists beside it):

    <source>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi          (UCF101.rar)
    <source>/ucfTrainTestlist/classInd.txt                  "1 ApplyEyeMakeup" (1-based index, class name)
    <source>/ucfTrainTestlist/trainlist0K.txt               "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    <source>/ucfTrainTestlist/testlist0K.txt                "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
                                                            (UCF101TrainTestSplits-RecognitionTask.zip)

K = data.ucf_split (1, 2 or 3). Labels are classInd's index - 1, class names in classInd's order; a label
given in a trainlist that disagrees with classInd is an error. A listed video missing on disk is rejected
("missing"); a file on disk in neither list is ignored and counted. A listed path that differs from the
file on disk only in letter case is matched to it (case differs between some extractions). The videos
are then decoded by the generic ffmpeg reader; manifest sources are paths below data.source.
"""
from __future__ import annotations

from pathlib import Path

from videogpt.config import DataParams, ParamsError
from videogpt.data.sources import Rejection, SPLITS, Source, SourceItem, is_video, walk_files

VIDEOS_DIR = "UCF-101"
LISTS_DIR = "ucfTrainTestlist"


def _lists_dir(root: Path) -> Path | None:
    for candidate in (root / LISTS_DIR, root.parent / LISTS_DIR, root / VIDEOS_DIR / LISTS_DIR):
        if (candidate / "classInd.txt").is_file():
            return candidate
    return None


def _videos_dir(root: Path) -> Path:
    return root / VIDEOS_DIR if (root / VIDEOS_DIR).is_dir() else root


def looks_like_ucf101(root: Path) -> bool:
    """A UCF-101/ folder (data.source or inside it) with ucfTrainTestlist/classInd.txt next to it."""
    return ((root / VIDEOS_DIR).is_dir() or root.name == VIDEOS_DIR) and _lists_dir(root) is not None


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; the official files have Windows line ends."""
    return [(i, line.strip()) for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1)
            if line.strip()]


def read_class_index(path: Path) -> list[str]:
    """classInd.txt -> class names, position = label (index - 1)."""
    names: dict[int, str] = {}
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ParamsError(f"data.source: {path}:{number}: expected '<index> <ClassName>', got {line!r}")
        index, name = int(parts[0]), parts[1]
        if index in names or name in names.values():
            raise ParamsError(f"data.source: {path}:{number}: class index {index} or name {name!r} repeated")
        names[index] = name
    if sorted(names) != list(range(1, len(names) + 1)):
        raise ParamsError(f"data.source: {path}: class indices must be 1..{len(names)} without gaps")
    return [names[i] for i in range(1, len(names) + 1)]


def read_split_list(path: Path, class_names: list[str]) -> list[str]:
    """trainlist/testlist -> the listed paths ('Class/v_...avi'); trainlist labels are checked."""
    paths = []
    for number, line in _lines(path):
        parts = line.split()
        rel = parts[0].replace("\\", "/")
        if len(parts) > 2 or "/" not in rel:
            raise ParamsError(f"data.source: {path}:{number}: expected '<Class>/<file>.avi [label]', got {line!r}")
        if len(parts) == 2:
            cls = rel.split("/", 1)[0]
            label = int(parts[1]) - 1 if parts[1].isdigit() else None
            if label is None or cls in class_names and class_names.index(cls) != label:
                raise ParamsError(f"data.source: {path}:{number}: label {parts[1]} of {rel} disagrees with "
                                  f"classInd.txt ({cls} is {class_names.index(cls) + 1 if cls in class_names else '?'})")
        paths.append(rel)
    return paths


def discover_ucf101(params: DataParams) -> Source:
    root = Path(params.source)
    lists = _lists_dir(root)
    if lists is None:
        raise ParamsError(f"data.source: no {LISTS_DIR}/classInd.txt in or beside '{root}' (data.format ucf101 "
                          "needs the official split lists, UCF101TrainTestSplits-RecognitionTask.zip)")
    if params.split_ratio is not None:
        raise ParamsError(f"data.split_ratio: must be null for data.format ucf101, which uses the official "
                          f"split lists (data.ucf_split), got {params.split_ratio}")
    videos = _videos_dir(root)
    prefix = videos.relative_to(root).as_posix() + "/" if videos != root else ""
    class_names = read_class_index(lists / "classInd.txt")
    label = {name: i for i, name in enumerate(class_names)}
    label_lower = {name.lower(): i for i, name in enumerate(class_names)}

    files, walk_errors = walk_files(videos)
    rejected = [Rejection(prefix + r.source, r.split, r.reason, r.detail) for r in walk_errors]
    if lists.is_relative_to(videos):  # the lists inside the videos folder are not inputs
        inside = lists.relative_to(videos).as_posix() + "/"
        files = [f for f in files if not f.startswith(inside)]
    on_disk = {f: f for f in files}
    by_lower = {}
    for f in files:
        by_lower.setdefault(f.lower(), f)

    split_of: dict[str, str] = {}
    label_of: dict[str, int] = {}
    for split in SPLITS:
        list_file = lists / f"{split}list0{params.ucf_split}.txt"
        if not list_file.is_file():
            raise ParamsError(f"data.ucf_split: {params.ucf_split}: split list '{list_file}' not found")
        for rel in read_split_list(list_file, class_names):
            found = on_disk.get(rel) or by_lower.get(rel.lower())
            if found is None:
                rejected.append(Rejection(prefix + rel, split, "missing",
                                          f"listed in {list_file.name} but not found in '{videos}'"))
                continue
            if split_of.get(found, split) != split:
                raise ParamsError(f"data.ucf_split: {rel} is in both trainlist0{params.ucf_split}.txt and "
                                  f"testlist0{params.ucf_split}.txt")
            cls = rel.split("/", 1)[0]
            index = label.get(cls, label_lower.get(cls.lower()))
            if index is None:
                rejected.append(Rejection(prefix + found, split, "class not in classInd.txt", cls))
                continue
            split_of[found], label_of[found] = split, index

    rejected_sources = {r.source for r in rejected}
    ignored = [f for f in files if f not in split_of and prefix + f not in rejected_sources]
    n_ignored = {"in neither split list": sum(is_video(f) for f in ignored),
                 "not a video": sum(not is_video(f) for f in ignored)}
    if not split_of:
        raise ParamsError(f"data.source: none of the videos listed for split {params.ucf_split} were found "
                          f"in '{videos}'")
    order = sorted(split_of, key=lambda f: (SPLITS.index(split_of[f]), f))
    items = [SourceItem(prefix + f, split_of[f], label_of[f]) for f in order]
    return Source(root, items, class_names, rejected, ignored={k: v for k, v in n_ignored.items() if v})
