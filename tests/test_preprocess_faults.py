"""Preprocess faults, really injected: the stage SIGKILLed mid-run (twice) and run again, a params change
between kill and rerun, symlinks leading out of data.source. The stage runs as a subprocess in a temporary
working directory, as DVC runs it, with small shards (VIDEOGPT_SHARD_CLIPS) so that it writes many."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from PIL import Image

from videogpt.config import parse, to_dict
from videogpt.data.ffmpeg_io import write_mp4
from videogpt.data.clip_store import build_clip_store
from videogpt.data.sources import OUTSIDE_ROOT

ROOT = Path(__file__).resolve().parents[1]
SHARD = 4            # clips per shard: 3-clip videos straddle shard boundaries
ENV = dict(os.environ, OMP_NUM_THREADS="1", VIDEOGPT_SHARD_CLIPS=str(SHARD), PYTHONPATH=str(ROOT))
OUT = ("data/clips.zarr", "data/manifest.csv", "data/rejected.csv")


def video(path: Path, seed: int, n_frames: int) -> None:
    frames = np.random.default_rng(seed).integers(0, 256, (n_frames, 16, 16, 3), np.uint8)
    write_mp4(path, frames, fps=8)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """48 videos of 3 clips each (36 train, 12 test, two classes), with too-short videos and a text file
    among them: rejections are written between clips. 54 items."""
    src = tmp_path_factory.mktemp("src")
    for i in range(48):
        split = "train" if i < 36 else "test"
        video(src / split / "ab"[i % 2] / f"{i:02d}.mp4", i, 12)
        if i % 8 == 0:
            video(src / split / "ab"[i % 2] / f"{i:02d}b_short.mp4", i, 2)
    (src / "train/b/21b_notes.txt").write_text("not a video")
    return src


def workdir(tmp_path: Path, name: str, source: Path, **data) -> Path:
    work = tmp_path / name
    work.mkdir()
    params = to_dict(parse({}))
    params["data"].update(source=str(source), resolution=8, sequence_length=4, num_workers=1, **data)
    parse(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work


# `python -m stages.preprocess`, with Python's Ctrl-C handler installed whatever the parent's SIGINT disposition:
# a child started while its parent ignores SIGINT inherits that and Python then installs no KeyboardInterrupt
# handler. pytest run as a background job of a non-interactive shell (`bash -c '... &'`, nohup) ignores SIGINT
# and SIGQUIT from the start (SigIgn 0x6), and the stage then ran to the end after SIGINT, printing nothing.
STAGE = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "runpy.run_module('stages.preprocess', run_name='__main__', alter_sys=True)")


def sigint_ignored_here() -> bool:
    ignored = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("SigIgn"))
    return bool(int(ignored.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def start(work: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", STAGE], cwd=work, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(work: Path) -> str:
    """Run the stage to completion; its stderr."""
    out, err = start(work).communicate(timeout=120)
    assert out.startswith("preprocess: ") and "Traceback" not in err, err[-2000:]
    return err


def kill_after(work: Path, items: int, sig=signal.SIGKILL) -> dict:
    """Start the stage and send it `sig` once its progress record is past `items` items, preferably inside
    an item (its clips straddle two shards); the record it left."""
    proc = start(work)
    record = work / "data/clips.zarr.tmp/progress.json"
    deadline = time.monotonic() + 180
    while True:
        try:
            progress = json.loads(record.read_text())
            if progress["item"] >= items + 2 or progress["item"] >= items and progress["skip"] < 3:
                break
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, "the stage ended before it could be killed:\n" + proc.stderr.read()[-2000:]
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the stage did not get past item {items} in 180 s:\n" + proc.communicate()[1][-2000:])
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate()
    # SIGINT: KeyboardInterrupt, then Python ends itself by the signal
    assert proc.returncode == -sig, (f"exit {proc.returncode} after {sig!r} at {progress} (SIGINT ignored by the "
                                     f"test process: {sigint_ignored_here()}):\n{err[-2000:]}")
    for out in OUT:
        assert not (work / out).exists(), f"{out} looks complete after a kill"
    return json.loads(record.read_text())


def leave_a_half_written_shard(work: Path) -> None:
    """What a kill in the middle of a shard write leaves beyond the record: arrays already grown (junk),
    manifest and rejected bytes, Zarr's and write_json's temporary files."""
    tmp = work / "data/clips.zarr.tmp"
    group = zarr.open_group(tmp, mode="r+")
    for split in ("train", "test"):
        clips, labels = group[split]["clips"], group[split]["labels"]
        n = clips.shape[0]
        clips.resize((n + SHARD, *clips.shape[1:]))
        clips[n:] = 77
        labels.resize((n + SHARD,))
        labels[n:] = 7
    (tmp / "train/clips/c/0/0/0/0/0.5eed.partial").parent.mkdir(parents=True, exist_ok=True)
    (tmp / "train/clips/c/0/0/0/0/0.5eed.partial").write_bytes(b"half a shard")
    (tmp / "progress.json.tmp").write_text('{"key": ')
    for csv in ("manifest", "rejected"):
        with open(work / f"data/{csv}.csv.tmp", "a") as f:
            f.write("999,train,junk.mp4,0,a,0,8.0,16,16\n")


def outputs(work: Path) -> dict:
    """Every file of the three outputs, as bytes."""
    files = {}
    for out in OUT:
        path = work / out
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                files[f.relative_to(work).as_posix()] = f.read_bytes()
    return files


def read(work: Path):
    group = zarr.open_group(work / OUT[0], mode="r")
    arrays = {f"{s}/{a}": group[s][a][:] for s in ("train", "test") for a in ("clips", "labels")}
    return arrays, dict(group.attrs), (work / OUT[1]).read_text(), (work / OUT[2]).read_text()


@pytest.fixture(scope="module")
def baseline(source, tmp_path_factory) -> Path:
    work = workdir(tmp_path_factory.mktemp("baseline"), "work", source)
    finish(work)
    return work


def test_interrupted_twice_then_resumed_equals_an_uninterrupted_run(source, baseline, tmp_path):
    work = workdir(tmp_path, "work", source)
    first = kill_after(work, 8, signal.SIGINT)        # Ctrl-C
    second = kill_after(work, first["item"] + 10)     # a resumed run, killed too
    assert first["item"] < second["item"] < 54 and sum(s["clips"] for s in second["splits"].values()) % SHARD == 0
    leave_a_half_written_shard(work)
    err = finish(work)
    written = second["splits"]["train"]["clips"] + second["splits"]["test"]["clips"]
    resumed = re.findall(r"resuming after (\d+) of 54 items \((\d+) clips already written;", err)
    assert resumed == [(str(second["item"]), str(written))]
    assert not (work / "data/clips.zarr.tmp").exists() and not (work / "data/clips.zarr/progress.json").exists()

    arrays, attrs, manifest, rejected = read(work)
    expected_arrays, expected_attrs, expected_manifest, expected_rejected = read(baseline)
    assert arrays.keys() == expected_arrays.keys()
    for name in arrays:
        np.testing.assert_array_equal(arrays[name], expected_arrays[name], err_msg=name)
    assert attrs == expected_attrs and attrs["counts"]["train"] == {"videos": 36, "clips": 108}
    assert manifest == expected_manifest and rejected == expected_rejected
    assert outputs(work) == outputs(baseline)  # byte for byte, shard files included


def test_a_rerun_with_other_params_starts_fresh(source, baseline, tmp_path):
    work = workdir(tmp_path, "work", source)
    kill_after(work, 5)
    (work / "params.yaml").write_text((work / "params.yaml").read_text().replace("resolution: 8", "resolution: 16"))
    err = finish(work)
    assert "resuming" not in err
    arrays, attrs, manifest, rejected = read(work)
    assert arrays["train/clips"].shape == (108, 4, 16, 16, 3) and attrs["resolution"] == 16
    _, _, expected_manifest, expected_rejected = read(baseline)  # manifest rows do not depend on the resolution
    assert manifest == expected_manifest and rejected == expected_rejected


def test_symlinks_out_of_the_input_root_are_rejected_not_decoded(tmp_path):
    outside = tmp_path / "outside"
    video(outside / "secret.mp4", 1, 4)
    video(outside / "folder/x.mp4", 2, 4)
    src = tmp_path / "src"
    video(src / "train/a/good.mp4", 3, 4)
    video(src / "test/b.mp4", 4, 4)
    (src / "train/a/escape.mp4").symlink_to(outside / "secret.mp4")
    (src / "train/b").mkdir()
    (src / "train/b/escape_dir").symlink_to(outside / "folder", target_is_directory=True)
    (src / "train/a/inside.mp4").symlink_to("../../test/b.mp4")        # stays inside: a video like any other
    (src / "train/a/updown.mp4").symlink_to("../../../src/test/b.mp4")  # leaves the root only on the way
    out = tmp_path / "out"
    build_clip_store(parse({"data": {"source": str(src), "resolution": 8, "sequence_length": 4,
                                     "num_workers": 1}}).data,
                     out / "clips.zarr", out / "manifest.csv", out / "rejected.csv", progress=False)
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    rejected = pd.read_csv(out / "rejected.csv", keep_default_na=False)
    assert sorted(manifest["source"]) == ["test/b.mp4", "train/a/good.mp4", "train/a/inside.mp4",
                                          "train/a/updown.mp4"]
    assert not any(".." in s or s.startswith("/") for s in manifest["source"])
    assert rejected[["source", "reason"]].values.tolist() == [["train/a/escape.mp4", OUTSIDE_ROOT],
                                                             ["train/b/escape_dir/", OUTSIDE_ROOT]]
    assert rejected["detail"].tolist() == [f"links to {outside.resolve() / 'secret.mp4'}",
                                           f"links to {outside.resolve() / 'folder'}"]


def test_adapters_do_not_read_through_escaping_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    np.save(outside / "seq.npy", np.zeros((4, 3, 8, 8), np.uint8))
    Image.new("RGB", (8, 8)).save(outside / "frame.png")
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    np.save(mnist / "mine.npy", np.zeros((4, 5, 8, 8), np.uint8))
    (mnist / "theirs.npy").symlink_to(outside / "seq.npy")
    frames = tmp_path / "frames"
    for video_dir in ("train/a/v1", "train/a/v2", "test/a/v3"):
        for i in range(4):
            (frames / video_dir).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(frames / video_dir / f"{i}.png")
    (frames / "train/a/v2/4.png").symlink_to(outside / "frame.png")

    def rejected(src, fmt):
        out = tmp_path / f"out_{fmt}"
        p = parse({"data": {"source": str(src), "format": fmt, "resolution": 8, "sequence_length": 4,
                            "num_workers": 1}}).data
        summary = build_clip_store(p, out / "clips.zarr", out / "manifest.csv", out / "rejected.csv", progress=False)
        table = pd.read_csv(out / "rejected.csv", keep_default_na=False)
        return summary.counts, table[["source", "reason"]].values.tolist()

    counts, rows = rejected(mnist, "moving_mnist")
    assert rows == [["theirs.npy", OUTSIDE_ROOT]] and counts["train"]["videos"] + counts["test"]["videos"] == 5
    counts, rows = rejected(frames, "frames")
    assert rows == [["train/a/v2/4.png", OUTSIDE_ROOT], ["train/a/v2", OUTSIDE_ROOT]]
    assert counts["train"]["videos"] == 1 and counts["test"]["videos"] == 1
