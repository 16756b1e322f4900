"""Actions on the data side: sidecar files beside videos, cut like the frames, stored per clip, read back
checked; the moving-digits generator's velocity sidecars."""
from pathlib import Path

import numpy as np
import pytest
from test_preprocess import build, grey_video, params

from videogpt.config import DefaultDataParams, ParamsError, parse, to_dict
from videogpt.data.clip_store import read_actions, read_video_actions
from videogpt.data.moving_digits import make_video_and_actions, video_digits, write_moving_digits
from videogpt.training import action_statistics


def indexed_actions(n_frames: int, width: int = 2) -> np.ndarray:
    """Row t = (t, -t, ...): every stored action says which frame it came from."""
    return np.stack([np.arange(n_frames) * (-1) ** k for k in range(width)], axis=1).astype(np.float32)


def test_sidecar_actions_are_cut_exactly_like_the_frames(tmp_path):
    src = tmp_path / "src"
    grey_video(src / "train/a.mp4", [10 + 20 * t for t in range(10)])
    np.save(src / "train/a.actions.npy", indexed_actions(10))
    grey_video(src / "train/b.mp4", [10 + 20 * t for t in range(7)])
    np.savetxt(src / "train/b.actions.csv", indexed_actions(7), delimiter=",")  # the CSV form
    grey_video(src / "test/c.mp4", [10 + 20 * t for t in range(5)])
    np.save(src / "test/c.actions.npy", indexed_actions(5))
    _, root, manifest, rejected = build(params(src, sequence_length=3, frame_stride=2, clip_stride=3),
                                        tmp_path / "out")
    assert len(rejected) == 0  # the sidecars are inputs, not "not a video"
    actions = read_actions(tmp_path / "out/clips.zarr", "train")
    starts = manifest[manifest.split == "train"]["start_frame"].to_numpy()
    assert actions.shape == (len(starts), 3, 2) and actions.dtype == np.float32
    expected = starts[:, None] + 2 * np.arange(3)  # frames start, start+2, start+4
    np.testing.assert_array_equal(actions[..., 0], expected)
    np.testing.assert_array_equal(actions[..., 1], -expected)
    # ... and they belong to the frames stored beside them (grey level 10 + 20 t)
    grey = root["train/clips"][:, :, 0, 0, 0].astype(int)
    assert np.abs(grey - (10 + 20 * expected)).max() <= 6
    np.testing.assert_array_equal(read_actions(tmp_path / "out/clips.zarr", "test")[..., 0], [[0, 2, 4]])


def test_bad_sidecars_reject_their_video_with_the_reason(tmp_path):
    src = tmp_path / "src"
    values = [10 + 20 * t for t in range(8)]
    for name in ("good", "short", "nan", "text", "wide", "none"):
        grey_video(src / f"train/{name}.mp4", values)
    np.save(src / "train/good.actions.npy", indexed_actions(8))
    np.save(src / "train/short.actions.npy", indexed_actions(7))
    np.save(src / "train/nan.actions.npy", np.full((8, 2), np.nan))
    (src / "train/text.actions.csv").write_text("dx,dy\n" + "1,2\n" * 8)
    np.save(src / "train/wide.actions.npy", indexed_actions(8, width=3))  # after good: another shape
    np.save(src / "train/orphan.actions.npy", indexed_actions(8))
    grey_video(src / "test/t.mp4", values)
    np.save(src / "test/t.actions.npy", indexed_actions(8))
    summary, root, manifest, rejected = build(params(src), tmp_path / "out")
    reasons = dict(zip(rejected.source, rejected.reason))
    assert reasons == {"train/short.mp4": "actions do not match the video",
                       "train/nan.mp4": "bad actions file",
                       "train/text.mp4": "bad actions file",
                       "train/wide.mp4": "actions of another shape",
                       "train/orphan.actions.npy": "actions file without a video"}
    details = dict(zip(rejected.source, rejected.detail))
    assert "short.actions.npy has 7 rows, the video 8 frames" in details["train/short.mp4"]
    assert "(3,) values per frame" in details["train/wide.mp4"]
    # the good video and the one without a sidecar are kept; the latter's clips hold no actions (NaN)
    assert sorted(set(manifest[manifest.split == "train"].source)) == ["train/good.mp4", "train/none.mp4"]
    stored = root["train/actions"][:]
    assert np.isfinite(stored[:2]).all() and np.isnan(stored[2:]).all()
    with pytest.raises(ValueError, match=r"2 of 4 train clips have no actions \(clip 2, 3"):
        read_actions(tmp_path / "out/clips.zarr", "train")
    assert read_actions(tmp_path / "out/clips.zarr", "test").shape == (2, 4, 2)


def test_fps_resampling_rejects_videos_with_actions_only(tmp_path):
    src = tmp_path / "src"
    grey_video(src / "train/a.mp4", [100] * 16)
    np.save(src / "train/a.actions.npy", indexed_actions(16))
    grey_video(src / "train/b.mp4", [100] * 16)
    grey_video(src / "test/c.mp4", [100] * 16)
    _, _, manifest, rejected = build(params(src, fps=4), tmp_path / "out")
    assert rejected.reason.tolist() == ["actions with fps resampling"]
    assert "data.fps=4 resamples this 8 fps video" in rejected.detail[0]
    assert set(manifest.source) == {"train/b.mp4", "test/c.mp4"}


def test_a_store_without_actions_says_so(tmp_path):
    grey_video(tmp_path / "src/train/a.mp4", [100] * 4)
    grey_video(tmp_path / "src/test/b.mp4", [100] * 4)
    build(params(tmp_path / "src"), tmp_path / "out")
    with pytest.raises(ValueError, match="the train clips have no actions"):
        read_actions(tmp_path / "out/clips.zarr", "train")


def test_moving_digits_actions_are_the_velocity_that_moves_the_digit(tmp_path):
    p = DefaultDataParams(n_train=2, n_test=1, resolution=32, n_frames=12, digit_size=14, fps=8)
    for index in range(3):
        digits, rng = video_digits(p, "train", index)
        frames, actions = make_video_and_actions(digits, p, rng)
        assert actions.shape == (12, 2) and actions.dtype == np.float32
        ink = frames[..., 0].astype(float)
        ys, xs = np.indices(ink.shape[1:])
        centre = np.stack([(ink * ys).sum((1, 2)), (ink * xs).sum((1, 2))], 1) / ink.sum((1, 2))[:, None]
        step = np.diff(centre, axis=0)
        speed = np.linalg.norm(actions, axis=1)
        assert np.allclose(speed, speed[0]) and 0.05 * 32 <= speed[0] <= 0.08 * 32  # constant speed, bounces aside
        straight = (np.sign(actions[:-1]) == np.sign(actions[1:])).all(1)  # no bounce between t and t+1
        assert straight.sum() >= 5
        assert np.abs(step[straight] - actions[:-1][straight]).max() < 1.0  # corners are rounded to pixels
    write_moving_digits(tmp_path / "videos", p)
    sidecars = sorted(Path(tmp_path / "videos").rglob("*.actions.npy"))
    assert [s.name for s in sidecars] == ["00000.actions.npy", "00000.actions.npy", "00001.actions.npy"]
    digits, rng = video_digits(p, "train", 1)
    np.testing.assert_array_equal(np.load(tmp_path / f"videos/train/{digits[0]}/00001.actions.npy"),
                                  make_video_and_actions(digits, p, rng)[1])


def test_actions_longer_than_a_clip_are_gathered_from_the_clips_of_the_same_video(tmp_path):
    src = tmp_path / "src"
    for name, n in (("a", 12), ("b", 8)):
        grey_video(src / f"train/{name}.mp4", [100] * n)
        np.save(src / f"train/{name}.actions.npy", indexed_actions(n) + (100 if name == "b" else 0))
        grey_video(src / f"test/{name}.mp4", [100] * n)
        np.save(src / f"test/{name}.actions.npy", indexed_actions(n) + (100 if name == "b" else 0))
    out = tmp_path / "out"
    build(params(src, sequence_length=4, frame_stride=1), out)  # a: clips from frames 0, 4, 8; b: 0, 4
    gather = lambda indices, n_frames: read_video_actions(out / "clips.zarr", out / "manifest.csv", "test", indices,
                                                          n_frames)
    np.testing.assert_array_equal(gather([0, 3], 4)[..., 0], [[0, 1, 2, 3], [100, 101, 102, 103]])
    np.testing.assert_array_equal(gather([0, 1, 3], 8)[..., 0], [np.arange(8), np.arange(4, 12), np.arange(100, 108)])
    with pytest.raises(ParamsError, match=r"sample.n_frames: 8 .* test clip 4 \(test/b.mp4, from frame 4\) has "
                                         r"actions for only 4 frames"):
        gather([0, 4], 8)


def test_an_action_prior_on_data_without_actions_stops_before_training(tmp_path):
    grey_video(tmp_path / "src/train/a.mp4", [100] * 8)
    grey_video(tmp_path / "src/test/b.mp4", [100] * 8)
    build(params(tmp_path / "src"), tmp_path / "out")
    raw = to_dict(parse({}))
    raw["prior"]["condition"] = "frames+actions"
    with pytest.raises(ParamsError, match="prior.condition: 'frames\\+actions' needs actions for every clip: .*"
                                          "the train clips have no actions"):
        action_statistics(tmp_path / "out/clips.zarr", parse(raw))
    assert action_statistics(tmp_path / "out/clips.zarr", parse({})) is None  # unconditional: not needed
