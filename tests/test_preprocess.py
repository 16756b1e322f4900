"""The preprocess stage with real ffmpeg and real Zarr: layouts, labels, clip cutting, bad inputs, determinism,
shard-aligned writes, atomic outputs and parameter errors raised before any decoding."""
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from PIL import Image

from videogpt.config import DataParams, ParamsError
from videogpt.data import clip_store as preprocess
from videogpt.data.ffmpeg_io import write_mp4
from videogpt.data.clip_store import SplitWriter, build_clip_store, clip_starts

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 6  # grey levels lost to H.264 + yuv420p
FLICKER = 2    # grey levels added to odd frames; with the codec's loss still within TOLERANCE


def grey_video(path: Path, values, size=(24, 32), fps=8) -> Path:
    """An MP4 whose frame t is the flat grey values[t] (+ FLICKER on odd frames): every decoded frame says
    where it came from, and no two frames are alike, so even a constant `values` is a video, not a still."""
    frames = np.stack([np.full((*size, 3), v + FLICKER * (t % 2), np.uint8) for t, v in enumerate(values)])
    write_mp4(path, frames, fps)
    return path


def params(source, **overrides) -> DataParams:
    return replace(DataParams(source=str(source), resolution=8, sequence_length=4, num_workers=1), **overrides)


def build(p: DataParams, out: Path):
    """Run the library; return (summary, store root, manifest, rejected)."""
    summary = build_clip_store(p, out / "clips.zarr", out / "manifest.csv", out / "rejected.csv", progress=False)
    return (summary, zarr.open_group(out / "clips.zarr", mode="r"),
            pd.read_csv(out / "manifest.csv", keep_default_na=False), pd.read_csv(out / "rejected.csv"))


@pytest.fixture
def split_source(tmp_path):
    """train/{cat,dog}/ and test/ with one labelled and one unlabelled video."""
    src = tmp_path / "src"
    grey_video(src / "train/cat/a.mp4", [10 + 20 * t for t in range(10)])   # 2 clips
    grey_video(src / "train/cat/b.mp4", [200] * 6)                          # 1 clip
    grey_video(src / "train/dog/c.mp4", [100] * 8)                          # 2 clips
    grey_video(src / "test/dog/d.mp4", [50] * 8)                            # 2 clips
    grey_video(src / "test/e.mp4", [150] * 4)                               # 1 clip, no class
    return src


def test_split_folders_give_splits_labels_and_manifest(split_source, tmp_path):
    summary, root, manifest, rejected = build(params(split_source), tmp_path / "out")
    assert root.attrs["class_names"] == ["cat", "dog"]
    assert root["train/clips"].shape == (5, 4, 8, 8, 3) and root["test/clips"].shape == (3, 4, 8, 8, 3)
    assert root["train/clips"].chunks == (1, 4, 8, 8, 3) and root["train/clips"].shards == (256, 4, 8, 8, 3)
    assert root["train/labels"][:].tolist() == [0, 0, 0, 1, 1] and root["test/labels"][:].tolist() == [1, 1, -1]
    assert summary.counts == {"train": {"videos": 3, "clips": 5}, "test": {"videos": 2, "clips": 3}, "rejected": 0}
    assert (root.attrs["resolution"], root.attrs["sequence_length"], root.attrs["fps"]) == (8, 4, 8.0)
    assert "num_workers" not in root.attrs["params"] and root.attrs["params"]["source"] == str(split_source)
    assert manifest.columns.tolist() == preprocess.MANIFEST_COLUMNS
    assert manifest["source"].tolist() == ["train/cat/a.mp4"] * 2 + ["train/cat/b.mp4"] + ["train/dog/c.mp4"] * 2 \
        + ["test/dog/d.mp4"] * 2 + ["test/e.mp4"]
    assert manifest["start_frame"].tolist() == [0, 4, 0, 0, 4, 0, 4, 0]
    assert manifest["clip"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert manifest["class_name"].tolist()[-2:] == ["dog", ""]
    assert set(manifest[["width", "height"]].itertuples(index=False)) == {(32, 24)}
    assert len(rejected) == 0


def test_clips_hold_the_right_frames_with_strides(tmp_path):
    values = [10 + 20 * t for t in range(10)]
    grey_video(tmp_path / "src/train/a.mp4", values)
    grey_video(tmp_path / "src/test/b.mp4", values)
    _, root, manifest, _ = build(params(tmp_path / "src", sequence_length=3, frame_stride=2, clip_stride=1),
                                 tmp_path / "out")
    clips = root["train/clips"][:]
    assert len(clips) == 6  # starts 0..5: each clip spans 5 frames of 10
    for start, clip in zip(manifest.query("split == 'train'")["start_frame"], clips):
        expected = [values[start], values[start + 2], values[start + 4]]
        assert np.abs(clip.reshape(3, -1).mean(1) - expected).max() < TOLERANCE
    assert root.attrs["fps"] == 4.0  # 8 fps video, every 2nd frame


def test_clip_starts():
    p = params(".", sequence_length=4)
    assert list(clip_starts(11, p)) == [0, 4] and list(clip_starts(3, p)) == []
    assert list(clip_starts(7, replace(p, frame_stride=2))) == [0]
    assert list(clip_starts(6, replace(p, clip_stride=1))) == [0, 1, 2]


def test_split_ratio_layout_is_deterministic(tmp_path):
    for i in range(10):
        grey_video(tmp_path / "src" / ("a" if i < 6 else "b") / f"{i}.mp4", [40] * 4)
    _, root, manifest, _ = build(params(tmp_path / "src", split_ratio=0.3), tmp_path / "out1")
    assert (root["train/clips"].shape[0], root["test/clips"].shape[0]) == (7, 3)
    assert root.attrs["class_names"] == ["a", "b"]
    assert all(manifest["label"] == (manifest["class_name"] == "b").astype(int))
    _, _, again, _ = build(params(tmp_path / "src", split_ratio=0.3), tmp_path / "out2")
    _, _, other_seed, _ = build(params(tmp_path / "src", split_ratio=0.3, split_seed=1), tmp_path / "out3")
    assert again.equals(manifest)
    assert set(other_seed.query("split == 'test'")["source"]) != set(manifest.query("split == 'test'")["source"])


def bad_and_good_inputs(src: Path, ffmpeg) -> dict[str, str]:
    """Two good videos and one file of each kind that must be rejected; returns {file: expected reason}."""
    grey_video(src / "train/good1.mp4", [80] * 8)
    grey_video(src / "test/good2.mp4", [160] * 4)
    (src / "train/empty.mp4").write_bytes(b"")
    (src / "train/text.mp4").write_text("this is not a video\n" * 10)
    (src / "train/notes.txt").write_text("an unrelated file")
    (src / "train/.hidden.mp4").write_text("ignored: hidden files are not inputs")
    grey_video(src / "train/short.mp4", [80] * 2)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440", "-t", "0.5", src / "train/audio_only.mp4")
    # Random-looking frames, so that damage in the middle of the file hits picture data.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=8", "-frames:v", "24", "-vf", "noise=alls=25:allf=t+u",
           "-pix_fmt", "yuv420p", "-movflags", "+faststart", src / "full.mp4")
    data = bytearray((src / "full.mp4").read_bytes())
    (src / "train/truncated.mp4").write_bytes(data[:len(data) // 3])
    mid, rng = len(data) // 2, random.Random(0)
    data[mid:mid + 2000] = bytes(rng.randrange(256) for _ in range(2000))
    (src / "train/corrupted.mp4").write_bytes(data)
    (src / "full.mp4").unlink()
    return {"train/empty.mp4": "empty file", "train/text.mp4": "not a video", "train/notes.txt": "not a video",
            "train/short.mp4": "too short (2 frames < 4)", "train/audio_only.mp4": "no video stream",
            "train/truncated.mp4": "ffmpeg: ", "train/corrupted.mp4": "ffmpeg: "}


def stage_workdir(tmp_path: Path, source: Path) -> Path:
    """A working directory with params.yaml whose data section reads `source`."""
    work = tmp_path / "work"
    work.mkdir()
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    full["data"].update(source=str(source), resolution=8, sequence_length=4, num_workers=2)
    (work / "params.yaml").write_text(yaml.safe_dump(full))
    return work


def run_stage(work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.preprocess"], cwd=work, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)))


def test_bad_files_are_rejected_with_reasons_and_the_stage_succeeds(tmp_path, ffmpeg):
    expected = bad_and_good_inputs(tmp_path / "src", ffmpeg)
    work = stage_workdir(tmp_path, tmp_path / "src")
    proc = run_stage(work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and "7 files rejected" in proc.stdout
    manifest = pd.read_csv(work / "data/manifest.csv")
    assert sorted(set(manifest["source"])) == ["test/good2.mp4", "train/good1.mp4"]
    rejected = pd.read_csv(work / "data/rejected.csv", keep_default_na=False)
    reasons = dict(zip(rejected["source"], rejected["reason"]))
    assert reasons.keys() == expected.keys()
    for source, reason in expected.items():
        assert reasons[source].startswith(reason), (source, reasons[source])
    assert rejected.set_index("source").loc["train/truncated.mp4", "detail"]  # ffmpeg's words are kept


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: chmod 000 does not stop root from reading")
def test_unreadable_file_is_rejected(tmp_path):
    grey_video(tmp_path / "src/train/good.mp4", [80] * 4)
    grey_video(tmp_path / "src/test/locked.mp4", [80] * 4).chmod(0)
    _, _, _, rejected = build(params(tmp_path / "src"), tmp_path / "out")
    assert rejected[["source", "reason"]].values.tolist() == [["test/locked.mp4", "unreadable: permission denied"]]


def test_no_clip_at_all_fails_with_one_message_and_writes_nothing(tmp_path):
    grey_video(tmp_path / "src/train/a.mp4", [80] * 2)
    (tmp_path / "src/test").mkdir()
    (tmp_path / "src/test/b.mp4").write_bytes(b"")
    work = stage_workdir(tmp_path, tmp_path / "src")
    proc = run_stage(work)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (  # after the progress bar
        f"preprocess: data.source: none of the 2 videos in '{tmp_path / 'src'}' produced a clip of 4 frames "
        "(1x too short (2 frames < 4); 1x empty file)")
    assert not (work / "data").exists() or not any((work / "data").iterdir())


def unusual_valid_inputs(src: Path, ffmpeg) -> None:
    """Files that look odd but are fine: each must give clips."""
    lavfi = ("-f", "lavfi", "-i")
    for split in ("train", "test"):
        (src / split).mkdir(parents=True)
    ffmpeg(*lavfi, "testsrc=size=321x241:rate=10", "-frames:v", "8", "-pix_fmt", "yuv444p", src / "train/odd.mp4")
    ffmpeg(*lavfi, "testsrc=size=24x40:rate=10", "-frames:v", "8", "-pix_fmt", "yuv420p", src / "train/portrait.mp4")
    ffmpeg(*lavfi, "testsrc=size=64x48:rate=10", "-frames:v", "8", "-c:v", "ffv1", "-pix_fmt", "gray",
           src / "train/grey.mkv")
    ffmpeg(*lavfi, "testsrc=size=64x48:rate=10", *lavfi, "sine", "-frames:v", "8", "-t", "0.8", "-pix_fmt",
           "yuv420p", "-c:a", "aac", src / "test/with_audio.mp4")
    ffmpeg(*lavfi, "testsrc=size=64x48:rate=25", "-frames:v", "30", "-vf", r"select=not(mod(n\,3))+lt(n\,6)",
           "-fps_mode", "vfr", "-pix_fmt", "yuv420p", src / "test/variable_rate.mp4")
    frames = []
    for t in range(6):
        a = np.zeros((30, 40), np.uint8)
        a[5:15, 3 * t:3 * t + 10] = 1
        im = Image.fromarray(a, "P")
        im.putpalette([0, 0, 0, 255, 0, 0])
        frames.append(im)
    frames[0].save(src / "test/transparent.gif", save_all=True, append_images=frames[1:], duration=100, loop=0,
                   transparency=0, disposal=2)


def test_unusual_but_valid_inputs_are_kept_and_output_is_worker_count_independent(tmp_path, ffmpeg):
    unusual_valid_inputs(tmp_path / "src", ffmpeg)
    outputs = {}
    for workers in (1, 2):
        summary, root, manifest, rejected = build(params(tmp_path / "src", num_workers=workers),
                                                  tmp_path / f"out{workers}")
        assert len(rejected) == 0, rejected.to_dict("records")
        assert set(manifest["source"]) == {p.relative_to(tmp_path / "src").as_posix()
                                           for p in (tmp_path / "src").rglob("*.*")}
        out = tmp_path / f"out{workers}"
        outputs[workers] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert outputs[1].keys() == outputs[2].keys() and outputs[1] == outputs[2]


def test_writes_are_shard_aligned(tmp_path, split_source, monkeypatch):
    monkeypatch.setattr(preprocess, "SHARD", 2)
    writes = []
    original_flush = SplitWriter.flush

    def recording_flush(self):
        writes.append((self.labels.path, self.n_clips, len(self.pending)))
        original_flush(self)

    monkeypatch.setattr(SplitWriter, "flush", recording_flush)
    _, root, _, _ = build(params(split_source), tmp_path / "out")
    assert root["train/clips"].shards == (2, 4, 8, 8, 3)
    written = sorted((path.split("/")[0], start, n) for path, start, n in writes if n)
    assert written == [("test", 0, 2), ("test", 2, 1), ("train", 0, 2), ("train", 2, 2), ("train", 4, 1)]


def test_interrupted_run_leaves_no_complete_looking_output(tmp_path, split_source, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clips.zarr.tmp").mkdir()  # a stale leftover of a killed run
    (out / "clips.zarr.tmp/junk").write_text("x")

    def crash(self):
        raise KeyboardInterrupt("simulated interruption")

    with monkeypatch.context() as m:
        m.setattr(SplitWriter, "flush", crash)
        with pytest.raises(KeyboardInterrupt):
            build_clip_store(params(split_source, num_workers=2), out / "clips.zarr", out / "manifest.csv",
                             out / "rejected.csv", progress=False)
    assert list(out.iterdir()) == []
    build(params(split_source), out)
    assert sorted(p.name for p in out.iterdir()) == ["clips.zarr", "manifest.csv", "rejected.csv"]


@pytest.mark.parametrize("overrides, message", [
    ({"source": "does/not/exist"}, "data.source: folder 'does/not/exist' does not exist"),
    ({"resolution": 0}, "data.resolution: 0 is out of range"),
    ({"sequence_length": 0}, "data.sequence_length: 0 is out of range"),
    ({"frame_stride": 0}, "data.frame_stride"),
    ({"num_workers": 0}, "data.num_workers"),
    ({"decode_timeout": 0.0}, "data.decode_timeout"),
    ({"split_ratio": 0.2}, "data.split_ratio: must be null"),
])
def test_invalid_params_fail_before_decoding(split_source, tmp_path, monkeypatch, overrides, message):
    monkeypatch.setitem(preprocess.READERS, "video", lambda *a: pytest.fail("decoded despite invalid params"))
    p = params(overrides.pop("source", split_source), **overrides)
    with pytest.raises(ParamsError, match="^" + message):
        build_clip_store(p, tmp_path / "c.zarr", tmp_path / "m.csv", tmp_path / "r.csv", progress=False)
    assert list(tmp_path.glob("c.zarr*")) == []


def test_layout_errors_name_the_key(tmp_path, monkeypatch):
    monkeypatch.setitem(preprocess.READERS, "video", lambda *a: pytest.fail("decoded despite invalid params"))
    flat = tmp_path / "flat"
    grey_video(flat / "a.mp4", [0] * 4)
    only_train = tmp_path / "only_train"
    grey_video(only_train / "train/a.mp4", [0] * 4)
    no_videos = tmp_path / "no_videos"
    (no_videos / "train").mkdir(parents=True)
    (no_videos / "test").mkdir()
    (no_videos / "train/readme.txt").write_text("x")
    cases = [(params(flat), "data.split_ratio: data.source"),
             (params(flat, split_ratio=1.0), "data.split_ratio: 1.0 leaves no training video"),
             (params(only_train), "data.source: .* has a train/ folder but no test/ folder"),
             (params(no_videos), "data.source: no video files found")]
    for p, message in cases:
        with pytest.raises(ParamsError, match="^" + message):
            build_clip_store(p, tmp_path / "c.zarr", tmp_path / "m.csv", tmp_path / "r.csv", progress=False)
    with pytest.raises(ParamsError, match="^data.source: .* has no train/ folder of .tfrecords files"):
        build_clip_store(params(flat, format="bair"), tmp_path / "c.zarr", tmp_path / "m.csv", tmp_path / "r.csv",
                         progress=False)
