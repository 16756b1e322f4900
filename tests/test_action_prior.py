"""Action-conditional priors trained for real, through the library's stage procedures: on a synthetic BAIR
TFRecord (frames+actions), and on the built-in moving digits, whose samples must follow the actions they are
given and keep their digit across the sliding window's boundaries."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from test_adapters import bair_record, write_tfrecord

from videogpt.checkpoint import load_prior, load_vqvae
from videogpt.config import DefaultDataParams, parse, to_dict
from videogpt.data.clip_store import build_clip_store, read_actions
from videogpt.data.moving_digits import make_video_and_actions, video_digits, write_moving_digits
from videogpt.generate import read_samples, run_sample_stage
from videogpt.sampling import sample, sample_tokens, window_starts
from videogpt.saved import fingerprint
from videogpt.tokens import build_token_store
from videogpt.video import to_float
from videogpt.training import train_prior, train_vqvae


def make_params(**sections):
    raw = to_dict(parse({}))
    raw["trainer"]["accelerator"] = "cpu"  # the test compares CPU results, on a GPU host too
    for name, values in sections.items():
        raw[name].update(values)
    return parse(raw)


def train_models(params, out: Path) -> tuple[Path, Path]:
    """preprocess -> VQ-VAE -> tokens -> prior, with the library's stage procedures; (vqvae dir, prior dir)."""
    clips, manifest = out / "clips.zarr", out / "manifest.csv"
    build_clip_store(params.data, clips, manifest, out / "rejected.csv", progress=False)
    train_vqvae(params, clips_path=clips, manifest_path=manifest, model_dir=out / "vqvae", ckpt_dir=out / "ckpt_vqvae",
                live_dir=out / "live_vqvae", metrics_path=out / "vqvae.json", picture_path=out / "vqvae.png")
    build_token_store(load_vqvae(out / "vqvae"), clips, out / "tokens.zarr", fingerprint=fingerprint(out / "vqvae"),
                      progress=False)
    train_prior(params, vqvae_dir=out / "vqvae", tokens_path=out / "tokens.zarr", clips_path=clips,
                model_dir=out / "prior", ckpt_dir=out / "ckpt_prior", live_dir=out / "live_prior",
                metrics_path=out / "prior.json")
    return out / "vqvae", out / "prior"


# ---- BAIR: frames + actions --------------------------------------------------------------------

def test_bair_actions_flow_into_a_frames_and_actions_prior_that_trains_and_samples(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "bair/softmotion30_44k"
    trajectories = {split: [(rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8),
                             (rng.normal(size=(12, 4)) * [1, 2, 3, 4]).astype(np.float32)) for _ in range(n)]
                    for split, n in (("train", 4), ("test", 2))}
    for split, trajs in trajectories.items():
        write_tfrecord(data / f"{split}/traj.tfrecords", [bair_record(f, a) for f, a in trajs])
    params = make_params(
        data={"source": str(tmp_path / "bair"), "format": "bair", "resolution": 16, "sequence_length": 4,
              "num_workers": 1},
        vqvae={"n_hiddens": 16, "res_hiddens": 8, "n_res_layers": 1, "downsample": [2, 4, 4], "n_codes": 16,
               "embedding_dim": 8, "max_steps": 4, "batch_size": 4, "checkpoint_every": 100, "val_every": 100},
        prior={"n_layer": 1, "n_head": 2, "n_embd": 16, "condition": "frames+actions", "n_cond_frames": 1,
               "resnet_dim": 8, "warmup_steps": 0, "max_steps": 4, "batch_size": 4, "checkpoint_every": 100,
               "val_every": 100},
        sample={"n_samples": 2, "batch_size": 2, "n_frames": 8},
        trainer={"log_every_n_steps": 1})
    vqvae_dir, prior_dir = train_models(params, tmp_path)

    # the stored actions are the TFRecords' (12 frames -> 3 clips of 4 per trajectory)
    stored = read_actions(tmp_path / "clips.zarr", "train")
    expected = np.concatenate([a.reshape(3, 4, 4) for _, a in trajectories["train"]])
    np.testing.assert_array_equal(stored, expected)
    vqvae = load_vqvae(vqvae_dir)
    prior, meta = load_prior(prior_dir, vqvae)
    assert prior.config.condition == "frames+actions" and prior.config.action_shape == (4, 4) and meta["steps"] == 4
    flat = expected.reshape(-1, 4)
    torch.testing.assert_close(prior.action_mean, torch.tensor(flat.mean(0), dtype=torch.float32))
    torch.testing.assert_close(prior.action_std, torch.tensor(flat.std(0), dtype=torch.float32))

    # the sample stage: test clip i's first frame and its actions over 8 frames (clips i and i+1 of its video)
    indices = tmp_path / "indices.json"  # one trial: test clips 0 and 1, as fvd_real_stats would write it
    indices.write_text(json.dumps({"trials": [[0, 1]], "generated": [[0, 1]]}))
    run_sample_stage(params, prior_dir=prior_dir, vqvae_dir=vqvae_dir, clips_path=tmp_path / "clips.zarr",
                     manifest_path=tmp_path / "manifest.csv", indices_path=indices, out_dir=tmp_path / "samples")
    generated = read_samples(tmp_path / "samples")
    videos = zarr.open_group(str(tmp_path / "samples/samples.zarr"), mode="r")["videos"]
    assert videos.shape == (2, 8, 16, 16, 3) and generated.tokens.shape[1] == 4  # 4 latent frames of 2x
    attrs = generated.attrs
    assert generated.real_index.tolist() == [0, 1] and attrs["n_frames"] == 8
    assert "first 1 frame(s) and the per-frame actions of 8 frames" in attrs["conditioning"]

    # the trained prior reads the actions: other actions, same frames and tokens -> other predictions
    frames = to_float(trajectories["test"][0][0][None, :1])
    actions = torch.from_numpy(trajectories["test"][0][1][None, :4])
    tokens = sample_tokens(prior, 1, frames=frames, actions=actions, seed=0)
    with torch.no_grad():
        change = prior(tokens, frames=frames, actions=actions) - prior(tokens, frames=frames, actions=-actions)
    assert change.abs().amax(-1).min() > 1e-5  # at every position


# ---- moving digits: actions steer the digit ------------------------------------------------------
#
# Budget (the smallest found reliable): 60 training videos of 64 frames at 32 px (480 clips of 8 frames at
# 16 px), a 32-channel VQ-VAE for 300 steps and a 2-layer, 64-wide prior for 1500 steps, both at lr 2e-3:
# about 100 s of one CPU core for the module. With half the steps a few samples lose their digit.

T = 8           # frames per clip
SPEED = 2.08    # pixels per frame at the generated 32 px (the middle of moving_digits.SPEED): 1.04 px at 16 px
BRIGHT = 64     # a pixel is part of the digit above this grey level (a quarter of white)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    params = make_params(
        default_data={"n_train": 60, "n_test": 4, "resolution": 32, "n_frames": 64, "digit_size": 14},
        data={"source": str(out / "videos"), "resolution": 16, "sequence_length": T, "num_workers": 1},
        vqvae={"n_hiddens": 32, "res_hiddens": 16, "n_res_layers": 1, "downsample": [2, 4, 4], "n_codes": 64,
               "embedding_dim": 16, "lr": 2e-3, "max_steps": 300, "batch_size": 16, "checkpoint_every": 10_000,
               "val_every": 10_000},
        prior={"n_layer": 2, "n_head": 4, "n_embd": 64, "dropout": 0.0, "attn_dropout": 0.0, "condition": "actions",
               "lr": 2e-3, "warmup_steps": 50, "max_steps": 1500, "batch_size": 16, "checkpoint_every": 10_000,
               "val_every": 10_000},
        trainer={"log_every_n_steps": 1000})
    write_moving_digits(out / "videos", params.default_data)
    vqvae_dir, prior_dir = train_models(params, out)
    vqvae = load_vqvae(vqvae_dir)
    prior, _ = load_prior(prior_dir, vqvae)
    return prior, vqvae


def generated_actions(params: DefaultDataParams, index: int) -> np.ndarray:
    """The actions (n_frames, 2) of the moving-digits generator's test video `index`."""
    digit, rng = video_digits(params, "test", index)
    return make_video_and_actions(digit, params, rng)[1]


def centroids(videos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) centroid of the bright pixels of every frame, weighted by brightness, (n, T, 2); and the bright
    mass per frame (n, T)."""
    ink = videos[..., 0].astype(float)
    ink[ink <= BRIGHT] = 0
    ys, xs = np.indices(ink.shape[2:])
    mass = ink.sum((2, 3))
    return np.stack([(ink * ys).sum((2, 3)), (ink * xs).sum((2, 3))], -1) / np.maximum(mass, 1e-9)[..., None], mass


def test_samples_follow_two_opposite_action_sequences(digits):
    """Right, then left, at constant speed for the whole clip: the digit must go that way. Commanded: 7 frames x
    1.04 px = 7.3 px at 16 px. Threshold, over 16 samples per command: the mean displacement of the centroid
    in the commanded direction is at least half of that (3.6 px), and at least 3/4 of the samples move
    >= 1 px that way. (Measured: means 6.6 and 6.2 px; 31 of the 32 samples moved >= 5 px the right way.)"""
    prior, vqvae = digits
    for direction in (+1, -1):
        actions = torch.zeros(16, T, 2)
        actions[..., 1] = direction * SPEED  # (dy, dx) per frame
        videos = sample(prior, vqvae, 16, actions=actions, seed=0, batch_size=16)
        c, _ = centroids(videos)
        moved = direction * (c[:, -1, 1] - c[:, 0, 1])
        assert moved.mean() >= 0.5 * (T - 1) * SPEED / 2, (direction, moved)
        assert (moved >= 1).mean() >= 0.75, (direction, moved)


def test_digit_persists_across_window_boundaries(digits):
    """24-frame videos (3x the clip) by the sliding window, with the moving-digits generator's own actions
    (bounces included) for 24 frames. A boundary is the step into the first new latent frame of a window;
    every latent frame there holds 2 frames, so boundaries are compared with the other steps between latent
    frames (within a latent frame the decoder moves the digit less). Threshold: the centroid's mean step at
    the boundaries is at most 1.25 x its mean step at those other steps, counting steps where the digit is
    visible in both frames (bright mass >= 1/4 of the video's median), which it must be in >= 90% of frames.
    The same videos sampled without context (each window afresh, window_stride = the window) must fail it:
    the check can see a jump. (Measured: ratio 0.91 with the prefix, 2.13 without; digit visible in 99.5%
    of frames.)"""
    prior, vqvae = digits
    n, n_frames, t, f = 16, 3 * T, prior.config.latent_shape[0], 2
    generator = DefaultDataParams(n_test=n, resolution=32, n_frames=n_frames, digit_size=14, seed=7)
    actions = torch.from_numpy(np.stack([generated_actions(generator, i) for i in range(n)]))

    def boundary_ratio(window_stride):
        videos = sample(prior, vqvae, n, actions=actions, n_frames=n_frames, window_stride=window_stride, seed=0,
                        batch_size=n)
        assert videos.shape == (n, n_frames, 16, 16, 3)
        c, mass = centroids(videos)
        visible = mass >= 0.25 * np.median(mass, axis=1, keepdims=True)
        assert visible.mean() >= 0.9
        starts = window_starts(n_frames // f, t, window_stride or t // 2)
        boundary = [(a + t) * f - 1 for a in starts[:-1]]  # step j: frame j -> j + 1
        others = [j for j in range(f - 1, n_frames - 1, f) if j not in boundary]
        step = np.linalg.norm(np.diff(c, axis=1), axis=-1)
        seen = visible[:, 1:] & visible[:, :-1]
        mean_step = lambda steps: step[:, steps][seen[:, steps]].mean()
        return mean_step(boundary) / mean_step(others)

    assert boundary_ratio(None) <= 1.25
    assert boundary_ratio(t) > 1.25
