"""The built-in moving-digits data: visible digits that move, determinism, and the folder layout on disk."""
import numpy as np
import pytest

from videogpt.config import DefaultDataParams
from videogpt.data.ffmpeg_io import decode_video
from videogpt.data.moving_digits import make_video, video_digits, write_moving_digits

SMALL = DefaultDataParams(n_train=12, n_test=3, resolution=32, n_frames=6, digit_size=14, fps=8)


def video(params: DefaultDataParams, split="train", index=0) -> np.ndarray:
    digits, rng = video_digits(params, split, index)
    return make_video(digits, params, rng)


def test_one_digit_is_fully_visible_and_moves_a_few_pixels_per_frame():
    params = DefaultDataParams()
    v = video(params, index=7)
    assert v.shape == (params.n_frames, 64, 64, 3) and v.dtype == np.uint8
    assert (v[..., 0] == v[..., 1]).all() and (v[..., 0] == v[..., 2]).all()  # white on black
    ink = v[..., 0].astype(float)
    assert ink.max() == 255
    assert len(set(ink.sum((1, 2)))) == 1  # never clipped by the frame edge
    rows = (ink > 0).any(2).sum(1)
    assert (rows >= params.digit_size - 2).all() and (rows <= params.digit_size).all()
    ys, xs = np.indices(ink.shape[1:])
    centres = np.stack([[(f * ys).sum() / f.sum(), (f * xs).sum() / f.sum()] for f in ink])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert 0.04 * 64 < np.median(steps) < 0.09 * 64


def test_generation_is_deterministic_and_seeded():
    assert np.array_equal(video(SMALL, index=3), video(SMALL, index=3))
    assert not np.array_equal(video(SMALL, index=3), video(SMALL, "test", 3))
    reseeded = DefaultDataParams(**{**SMALL.__dict__, "seed": 1})
    assert not np.array_equal(video(SMALL, index=3), video(reseeded, index=3))


def test_classes_are_balanced_and_two_digits_add_ink():
    assert [video_digits(SMALL, "train", i)[0][0] for i in range(12)] == [*range(10), 0, 1]
    two = DefaultDataParams(**{**SMALL.__dict__, "max_digits": 2})
    counts = {len(video_digits(two, "train", i)[0]) for i in range(20)}
    assert counts == {1, 2}


def test_writes_mp4_folders_atomically_and_reproducibly(tmp_path):
    out = tmp_path / "videos"
    (tmp_path / "videos.tmp").mkdir()  # a leftover of a killed run
    assert write_moving_digits(out, SMALL) == {"train": 12, "test": 3}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert len(files) == 15 and files[:2] == ["test/0/00000.mp4", "test/1/00001.mp4"]
    assert "train/0/00010.mp4" in files and not (tmp_path / "videos.tmp").exists()
    decoded = decode_video(out / "train/3/00003.mp4", 32)
    assert decoded.shape == (6, 32, 32, 3)
    assert np.abs(decoded.astype(int) - video(SMALL, index=3)).mean() < 3
    first = {f: (out / f).read_bytes() for f in files}
    write_moving_digits(out, SMALL)
    assert first == {f: (out / f).read_bytes() for f in files}


@pytest.mark.parametrize("digit_size", [8, 64])
def test_extreme_digit_sizes_fit_in_the_frame(digit_size):
    params = DefaultDataParams(resolution=32, n_frames=4, digit_size=digit_size)
    v = video(params)
    assert v.shape == (4, 32, 32, 3) and v.max() == 255
