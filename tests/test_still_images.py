"""Still images among the videos: a file with fewer than two distinct frames is rejected, not decoded at a
constant rate into many clips of one unmoving picture. Real files made with the real ffmpeg and Pillow."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from PIL import Image

from videogpt.config import DataParams
from videogpt.data.ffmpeg_io import VideoError, check_not_still, decode_video, distinct_source_frames
from videogpt.data.clip_store import build_clip_store

STILL = "a still image: 1 frame"


def bar_frames(n: int, size: int = 32) -> list[np.ndarray]:
    """A white vertical bar moving 4 pixels right per frame on black."""
    frames = np.zeros((n, size, size, 3), np.uint8)
    for t in range(n):
        frames[t, :, 4 * t:4 * t + 4] = 255
    return list(frames)


def gif(path: Path, frames: list[np.ndarray], ms_per_frame: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=len(images) > 1, append_images=images[1:], duration=ms_per_frame, loop=0)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory, ffmpeg) -> Path:
    src = tmp_path_factory.mktemp("stills")
    for split in ("train", "test"):
        (src / split).mkdir()
    picture = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
    gif(src / "train/still.gif", [picture], 2000)  # one picture shown for 2 s: 200 frames at GIF's 100 fps
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", 1, "-pix_fmt", "yuv420p",
           src / "train/one_frame.mp4")
    # ffmpeg's GIF encoder keeps the repeated picture as a second (empty-difference) frame: 2 frames, 1 picture
    ffmpeg("-f", "lavfi", "-i", "color=c=0x406080:s=32x32:r=2", "-frames:v", 2, src / "train/same_twice.gif")
    gif(src / "train/moving.gif", bar_frames(6), 500)  # 2 frames per second of real motion
    gif(src / "test/moving.gif", bar_frames(8), 500)
    # Variable frame rate: frame n shown at n^2/20 s, so the gaps grow (the container keeps the timestamps).
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=10", "-frames:v", 8, "-vf", "setpts=N*N/20/TB",
           "-fps_mode", "vfr", "-pix_fmt", "yuv420p", src / "train/vfr.mp4")
    # Static-looking but real: one pixel of 64x64 changes by one grey level per frame, losslessly stored.
    # At 8x8 (area average of 64 pixels) the change rounds away, so the decoded frames are all equal.
    subtle = np.full((8, 64, 64, 3), 100, np.uint8)
    subtle[np.arange(8), 0, 0] += np.arange(8, dtype=np.uint8)[:, None] % 2
    (src / "train/subtle.rgb").write_bytes(subtle.tobytes())
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x64", "-r", 8, "-i", src / "train/subtle.rgb",
           "-c:v", "ffv1", "-pix_fmt", "bgr0", src / "train/subtle.mkv")
    (src / "train/subtle.rgb").unlink()
    return src


def test_stills_are_rejected_and_moving_files_kept(source, tmp_path):
    params = DataParams(source=str(source), resolution=8, sequence_length=4, num_workers=1)
    build_clip_store(params, tmp_path / "clips.zarr", tmp_path / "manifest.csv", tmp_path / "rejected.csv",
                     progress=False)
    rejected = pd.read_csv(tmp_path / "rejected.csv").set_index("source")
    assert sorted(rejected.index) == ["train/one_frame.mp4", "train/same_twice.gif", "train/still.gif"]
    assert set(rejected["reason"]) == {STILL}
    assert "200 identical frames" in rejected.loc["train/still.gif", "detail"]
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert set(manifest["source"]) == {"train/moving.gif", "train/vfr.mp4", "train/subtle.mkv", "test/moving.gif"}
    clips = zarr.open_group(str(tmp_path / "clips.zarr"), mode="r")["train/clips"][:]
    moving = clips[(manifest.query("split == 'train'")["source"] == "train/moving.gif").to_numpy()]
    assert len(moving) == 1  # 6 frames at 2 fps: one 4-frame clip, and every frame of it differs
    assert len({frame.tobytes() for frame in moving[0]}) == 4


def test_a_still_is_recognised_by_its_source_not_its_decoded_size(source):
    subtle = source / "train/subtle.mkv"
    frames = decode_video(subtle, 8)
    assert len({f.tobytes() for f in frames}) == 1  # identical at the training size...
    assert distinct_source_frames(subtle) == 2      # ...but not in the file: kept
    check_not_still(subtle, frames)
    assert distinct_source_frames(source / "train/same_twice.gif") == 1
    assert distinct_source_frames(source / "train/moving.gif") == 6
    assert distinct_source_frames(source / "train/moving.gif", limit=2) == 2  # stops once it knows enough


def test_counting_frames_fails_like_decoding(source, tmp_path):
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(VideoError, match="ffmpeg: "):
        distinct_source_frames(tmp_path / "garbage.mp4")
    with pytest.raises(VideoError, match="timeout"):
        distinct_source_frames(source / "train/moving.gif", timeout=1e-4)
