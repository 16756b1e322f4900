"""ffmpeg I/O against the real binary: probing, scaling + centre crop, frame values, writers, failures."""
import os

import numpy as np
import pytest
from PIL import Image

from videogpt.data import ffmpeg_io
from videogpt.data.ffmpeg_io import VideoError, decode_video, probe, write_gif, write_mp4

# Frame values survive H.264 (crf 18) + yuv420p + the rgb conversion within a few levels on flat areas.
CODEC_TOLERANCE = 6


def solid_frames(values, height=32, width=32):
    """One grey level per frame."""
    return np.stack([np.full((height, width, 3), v, np.uint8) for v in values])


def test_probe_reads_size_rate_and_duration(tmp_path, ffmpeg):
    path = tmp_path / "a.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=80x48:rate=10", "-frames:v", "20", "-pix_fmt", "yuv420p", path)
    info = probe(path)
    assert (info.width, info.height, info.fps) == (80, 48, 10.0)
    assert info.duration == pytest.approx(2.0, abs=0.01)


def test_frames_keep_their_values_and_order(tmp_path):
    values = [16 * t + 8 for t in range(12)]
    write_mp4(tmp_path / "grey.mp4", solid_frames(values), fps=8)
    video = decode_video(tmp_path / "grey.mp4", resolution=16)
    assert video.shape == (12, 16, 16, 3) and video.dtype == np.uint8
    assert np.abs(video.reshape(12, -1).mean(1) - values).max() < CODEC_TOLERANCE


@pytest.mark.parametrize("landscape", [True, False])
def test_short_side_scaled_then_centre_cropped(tmp_path, landscape):
    # Bands red | green green | blue along the long side: the centre square must be all green.
    band = np.zeros((32, 64, 3), np.uint8)
    band[:, :16, 0] = band[:, 16:48, 1] = band[:, 48:, 2] = 255
    frame = band if landscape else band.transpose(1, 0, 2)
    write_mp4(tmp_path / "bands.mp4", np.stack([frame] * 3), fps=8)
    video = decode_video(tmp_path / "bands.mp4", resolution=16)
    assert video.shape == (3, 16, 16, 3)
    inner = video[:, 2:-2, 2:-2].astype(int)  # chroma subsampling blurs a pixel or two at the borders
    assert inner[..., 1].min() > 255 - 3 * CODEC_TOLERANCE
    assert inner[..., 0].max() < 3 * CODEC_TOLERANCE and inner[..., 2].max() < 3 * CODEC_TOLERANCE


def test_moving_square_is_where_it_was_drawn(tmp_path):
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    for t in range(8):
        frames[t, 12:20, 3 * t:3 * t + 8] = 255
    write_mp4(tmp_path / "square.mp4", frames, fps=8)
    video = decode_video(tmp_path / "square.mp4", resolution=32)
    for t in range(8):
        ys, xs = np.nonzero(video[t, ..., 0] > 128)
        assert xs.mean() == pytest.approx(3 * t + 3.5, abs=0.5) and ys.mean() == pytest.approx(15.5, abs=0.5)


def test_fps_filter_resamples(tmp_path):
    write_mp4(tmp_path / "a.mp4", solid_frames(range(0, 160, 10)), fps=8)
    assert len(decode_video(tmp_path / "a.mp4", 16, fps=4)) == 8


def test_write_mp4_pads_odd_sizes_and_leaves_no_temp_file(tmp_path):
    write_mp4(tmp_path / "odd.mp4", solid_frames([200] * 3, height=17, width=33), fps=5)
    info = probe(tmp_path / "odd.mp4")
    assert (info.width, info.height, info.fps) == (34, 18, 5.0)
    assert [p.name for p in tmp_path.iterdir()] == ["odd.mp4"]


def test_write_mp4_rejects_wrong_input_without_touching_the_target(tmp_path):
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_mp4(tmp_path / "x.mp4", np.zeros((4, 8, 8), np.uint8), fps=8)
    assert list(tmp_path.iterdir()) == []


def test_write_gif_round_trip(tmp_path):
    frames = solid_frames([0, 128, 255], height=10, width=14)
    write_gif(tmp_path / "a.gif", frames, fps=10)
    with Image.open(tmp_path / "a.gif") as im:
        assert (im.n_frames, im.size) == (3, (14, 10))
    assert np.abs(decode_video(tmp_path / "a.gif", 10).reshape(3, -1).mean(1) - [0, 128, 255]).max() < 2


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"just some text\n" * 20, "not a video"),
                                             (None, "empty file")])
def test_unusable_files_raise_video_error_with_a_reason(tmp_path, content, reason):
    if content is None:
        os.mkfifo(tmp_path / "bad.mp4")  # a named pipe with no writer must not hang the probe
    else:
        (tmp_path / "bad.mp4").write_bytes(content)
    with pytest.raises(VideoError) as err:
        probe(tmp_path / "bad.mp4")
    assert err.value.reason == reason


def test_hanging_ffmpeg_is_killed_at_the_timeout(tmp_path):
    write_mp4(tmp_path / "a.mp4", solid_frames([0] * 4), fps=8)
    with pytest.raises(VideoError) as err:
        decode_video(tmp_path / "a.mp4", 16, timeout=1e-4)
    assert err.value.reason == "timeout"


def test_permission_denied_is_reported_as_unreadable(tmp_path, monkeypatch):
    # chmod 000 does not stop root (tests often run as root), so deny the open itself.
    write_mp4(tmp_path / "a.mp4", solid_frames([0] * 2), fps=8)

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ffmpeg_io.os, "open", deny)
    with pytest.raises(VideoError) as err:
        probe(tmp_path / "a.mp4")
    assert err.value.reason == "unreadable: permission denied"
