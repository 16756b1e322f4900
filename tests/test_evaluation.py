"""The FVD code path of the pipeline: real subsets on a class-sorted store, the conditioning gathered from
them, and the real-statistics cache with an I3D in the published weight layout (random values: the real
weights cannot be downloaded here, so the numbers mean nothing; the plumbing is what is tested)."""
import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zarr

from i3d_layout import published_layout_state_dict
from videogpt.config import DataParams, EvalParams, ParamsError, parse
from videogpt.data.clip_store import build_clip_store, clips_array, read_labels
from videogpt.data.ffmpeg_io import write_mp4
from videogpt.evaluation import compute_real_stats, draw_real_sets, load_real_stats, read_real_sets, real_protocol
from videogpt.generate import gather_conditioning
from videogpt.metrics.frechet import StatsMismatchError
from videogpt.video import to_float


@pytest.fixture(scope="module")
def class_sorted_store(tmp_path_factory):
    """A real clip store whose test split holds 3 classes in path order, 8 clips each (2 videos x 4 clips)."""
    root = tmp_path_factory.mktemp("sorted")
    for c, name in enumerate(["a_walk", "b_jump", "c_swim"]):
        for v in range(2):
            frames = np.stack([np.full((24, 32, 3), 40 * c + 5 * v + t, np.uint8) for t in range(16)])
            write_mp4(root / f"src/test/{name}/{v}.mp4", frames, fps=8)
            write_mp4(root / f"src/train/{name}/{v}.mp4", frames, fps=8)
    p = DataParams(source=str(root / "src"), resolution=8, sequence_length=4, num_workers=1)
    build_clip_store(p, root / "clips.zarr", root / "manifest.csv", root / "rejected.csv", progress=False)
    return root / "clips.zarr"


def test_real_subsets_cover_every_class_of_a_sorted_store(class_sorted_store):
    labels = read_labels(class_sorted_store, "test")
    assert len(labels) == 24 and list(labels) == sorted(labels) and set(labels) == {0, 1, 2}
    assert set(labels[:12]) == {0, 1}  # "the first n_real clips" would miss a class
    for seed in range(10):
        trials = draw_real_sets(EvalParams(n_real=12, n_trials=2, seed=seed), class_sorted_store)["trials"]
        assert len(trials) == 2 and all(len(t) == 12 for t in trials)
        assert trials[0] == trials[1]  # the videogpt protocol keeps one real subset in every trial
        for t in trials:
            assert set(labels[t]) == {0, 1, 2}, (seed, t)
    again = draw_real_sets(EvalParams(n_real=12, n_trials=2, seed=3), class_sorted_store)
    first = draw_real_sets(EvalParams(n_real=12, n_trials=2, seed=3), class_sorted_store)
    assert again == first  # equal seeds, equal subsets
    with pytest.raises(ParamsError, match=r"eval.n_real: 25 \(eval.fvd_protocol=videogpt\) exceeds the 24 clips of "
                                          "the test split"):
        draw_real_sets(EvalParams(n_real=25), class_sorted_store)


def test_conditioning_comes_from_exactly_the_chosen_clips(class_sorted_store):
    sets = draw_real_sets(EvalParams(n_real=12, n_trials=2, seed=0), class_sorted_store)
    order = np.concatenate(sets["generated"])  # generated video i <-> real clip order[i], trial-major
    assert order.tolist() == sets["trials"][0] + sets["trials"][1]  # n_generated = n_real: one video per clip
    labels = gather_conditioning(SimpleNamespace(condition="class", n_classes=3), class_sorted_store, order)["label"]
    assert labels.tolist() == read_labels(class_sorted_store, "test")[order].tolist()
    frames = gather_conditioning(SimpleNamespace(condition="frames", n_cond_frames=2), class_sorted_store,
                                 order)["frames"]
    clips = np.asarray(clips_array(class_sorted_store, "test")[:])
    assert frames.shape == (24, 3, 2, 8, 8)
    torch.testing.assert_close(frames, to_float(clips[order, :2]), rtol=0, atol=0)
    assert gather_conditioning(SimpleNamespace(condition="none"), class_sorted_store, order) == {}
    with pytest.raises(ValueError, match="no label in"):
        gather_conditioning(SimpleNamespace(condition="class", n_classes=2), class_sorted_store, order)


# ------------------------------------------------------------------------------------------------
# The real-statistics cache


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(published_layout_state_dict(seed=0), path)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "clips.zarr"
    root = zarr.open_group(str(path), mode="w")
    g = root.create_group("test")
    rng = np.random.default_rng(0)
    g.create_array("clips", data=rng.integers(0, 256, (4, 10, 16, 16, 3), dtype=np.uint8), chunks=(1, 10, 16, 16, 3))
    return path


def params(weights, **ev):
    return parse({"data": {"resolution": 16, "sequence_length": 10}, "vqvae": {"downsample": [2, 4, 4]},
                  "eval": {"i3d_weights": weights and str(weights), "n_real": 2, "n_trials": 2, "batch_size": 2} | ev})


def test_real_stats_per_trial_are_cached_with_their_indices_and_protocol(weights, clips, tmp_path):
    p = params(weights)
    info = compute_real_stats(p, clips_path=clips, out_dir=tmp_path / "stats")
    proto = info["protocol"]
    assert info["available"] and proto["weights_sha256"] and proto["i3d_protocol"] == "videogpt"
    assert (proto["n_real"], proto["n_trials"], proto["n_source"], proto["frames"]) == (2, 2, 4, 10)
    assert proto["comparable_with"] == [] and "n_real=2 (the anchor uses 256" in proto["not_comparable_because"][0]
    doc = json.loads((tmp_path / "stats/indices.json").read_text())
    sets = read_real_sets(tmp_path / "stats")
    assert doc == sets == draw_real_sets(p.eval, clips) and len(sets["trials"]) == 2
    assert sets["offsets"] == [[0, 0], [0, 0]]  # 10-frame clips: no longer source for a 16-frame window
    stats, reason = load_real_stats(tmp_path / "stats", real_protocol(p, sets))
    assert reason is None and len(stats) == 2
    assert all(mu.shape == (400,) and sigma.shape == (400, 400) and np.isfinite(sigma).all() for mu, sigma in stats)
    # another flavour, seed or subset never reuses the cache
    with pytest.raises(StatsMismatchError, match="i3d_protocol: cached 'videogpt' vs requested 'tf'"):
        load_real_stats(tmp_path / "stats", real_protocol(params(weights, fvd_protocol="tf_hub"), sets))
    other = sets | {"trials": [[0, 3], sets["trials"][1]]}
    with pytest.raises(StatsMismatchError, match="indices_sha256"):
        load_real_stats(tmp_path / "stats", real_protocol(p, other))


def test_missing_weights_give_a_reason_and_still_draw_the_subsets(clips, tmp_path):
    p = params(tmp_path / "nowhere.pt")
    info = compute_real_stats(p, clips_path=clips, out_dir=tmp_path / "stats")
    assert not info["available"] and info["reason"].startswith("no I3D weights") and "does not exist" in info["reason"]
    assert len(read_real_sets(tmp_path / "stats")["trials"]) == 2
    assert load_real_stats(tmp_path / "stats", info["protocol"]) == (None, info["reason"])


def test_too_few_test_clips_is_rejected_before_any_work(weights, clips, tmp_path):
    with pytest.raises(ParamsError, match=r"eval.n_real: 5 .* exceeds the 4 clips .* eval.n_trials=2"):
        compute_real_stats(params(weights, n_real=5), clips_path=clips, out_dir=tmp_path / "stats")
    assert not (tmp_path / "stats").exists() and not (tmp_path / "stats.tmp").exists()


def test_short_clips_give_the_frames_reason_only_with_weights(weights, tmp_path):
    path = tmp_path / "short.zarr"
    zarr.open_group(str(path), mode="w").create_group("test").create_array(
        "clips", data=np.zeros((3, 8, 16, 16, 3), np.uint8), chunks=(1, 8, 16, 16, 3))
    p = replace(params(weights), data=replace(params(weights).data, sequence_length=8))
    assert "needs at least 9" in compute_real_stats(p, clips_path=path, out_dir=tmp_path / "a")["reason"]
    reason = compute_real_stats(params(None), clips_path=path, out_dir=tmp_path / "b")["reason"]
    assert reason.startswith("no I3D weights: eval.i3d_weights is null")


def test_generated_sets_that_do_not_match_the_subsets_are_rejected_before_any_work(tmp_path):
    from videogpt.evaluation import _check_samples
    from videogpt.generate import GeneratedSets
    sets = {"fvd_protocol": "videogpt", "n_real": 2, "n_generated": 3, "trials": [[0, 2], [0, 2]],
            "generated": [[0, 2, 0], [0, 2, 0]]}
    ep = EvalParams(n_real=2, n_generated=3, n_trials=2)
    ok = GeneratedSets(tokens=None, real_index=np.array([0, 2, 0, 0, 2, 0]), attrs={})
    _check_samples(ep, sets, ok, tmp_path)
    few = GeneratedSets(tokens=None, real_index=np.array([0, 2, 0]), attrs={})  # one trial's worth only
    with pytest.raises(ParamsError, match=r"eval.n_generated / eval.n_trials: .* holds 3 generated videos, but 2 "):
        _check_samples(ep, sets, few, tmp_path)
    other = GeneratedSets(tokens=None, real_index=np.array([0, 2, 0, 2, 0, 0]), attrs={})  # other clips
    with pytest.raises(ParamsError, match="re-run the sample stage"):
        _check_samples(ep, sets, other, tmp_path)
    with pytest.raises(ParamsError, match="params ask for 3 trials of 2 real and 3 generated"):
        _check_samples(EvalParams(n_real=2, n_generated=3, n_trials=3), sets, ok, tmp_path)
    with pytest.raises(ParamsError, match=r"eval.fvd_protocol .* re-run fvd_real_stats"):
        _check_samples(replace(ep, fvd_protocol="tf_hub"), sets, ok, tmp_path)


def test_the_protocol_records_the_conditioning_frames():
    from videogpt.evaluation import conditioning_note
    from videogpt.generate import GeneratedSets
    frames = GeneratedSets(tokens=None, real_index=np.zeros(0), attrs={
        "condition": "frames", "n_cond_frames": 1, "conditioning_frames_in_videos": "included, as generated"})
    note = conditioning_note(frames)
    assert note["conditioning_frames_in_fvd"] == "included, as generated" and note["n_cond_frames"] == 1
    assert conditioning_note(GeneratedSets(tokens=None, real_index=np.zeros(0), attrs={})) == {"condition": "none"}


def test_recon_cache_names_entries_by_everything_they_depend_on(tmp_path):
    from videogpt.evaluation import ReconCache
    cache = ReconCache(tmp_path)
    clips, offsets = np.zeros((2, 4, 8, 8, 3), np.uint8), np.array([0, 1])
    key = cache.path("identity", clips, offsets)
    assert key == cache.path("identity", clips.copy(), offsets.astype(np.int32))      # content, not objects
    other = clips.copy()
    other[1, 3, 7, 7, 2] = 1
    assert len({key, cache.path("other vqvae", clips, offsets), cache.path("identity", other, offsets),
                cache.path("identity", clips, np.array([0, 2])),
                cache.path("identity", clips.reshape(4, 2, 8, 8, 3), offsets)}) == 5
    rows = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    cache.save(key, rows)
    assert np.array_equal(np.load(key), rows) and [p.name for p in tmp_path.iterdir()] == [key.name]
