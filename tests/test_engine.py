"""compute.engine: ray. preprocess decodes its videos as Ray tasks (here a local Ray of 1 or 2 CPUs; on a
cluster the one at RAY_ADDRESS) and writes the same bytes as engine local, into a moto S3 bucket as into a
folder, each shard object PUT once; a Ray worker killed mid-stage is replaced and its video decoded again;
tokenize and the FVD statistics (I3D features as per-trial sums) give the local engine's bytes."""
import dataclasses
import os
import signal
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pytest

pytest.importorskip("ray", reason="compute.engine: ray needs the cluster extra (pip install -e '.[cluster]')")

from s3 import aws_env  # noqa: E402
from test_preprocess import unusual_valid_inputs  # noqa: E402
from test_storage_stores import build, data_params, files, small_shards, source, vqvae  # noqa: E402,F401

from videogpt import storage  # noqa: E402
from videogpt.config import ComputeParams, ParamsError, parse  # noqa: E402
from videogpt.data import clip_store  # noqa: E402
from videogpt.data.ffmpeg_io import write_mp4  # noqa: E402
from videogpt.engine import ordered_map, start_local_ray  # noqa: E402


def on_ray(workers: int) -> ComputeParams:
    return ComputeParams(engine="ray", workers=workers)


@pytest.mark.parametrize("compute,local_workers", [(None, 1), (None, 2), (on_ray(2), 1)])
def test_ordered_map_keeps_the_input_order_and_raises_what_fn_raises(compute, local_workers):
    squares = ordered_map(partial(pow, exp=2), range(40), compute, local_workers)
    assert list(squares) == [i * i for i in range(40)]
    with pytest.raises(ValueError, match="invalid literal"):
        list(ordered_map(int, ["1", "2", "x", "4"], compute, local_workers))


@pytest.fixture(scope="module")
def local_ray(_moto_endpoint):
    """One local Ray of 2 CPUs for the tests below (the stages join a Ray that is up, as on a cluster), its
    workers pointed at the moto server like the tests' own process. The test above starts and stops its own."""
    import ray
    start_local_ray(2, aws_env(_moto_endpoint))
    yield
    ray.shutdown()


def test_an_unknown_engine_is_refused_naming_the_key():
    with pytest.raises(ParamsError, match="compute.engine"):
        parse({"compute": {"engine": "spark"}})


def outputs(out, root=None) -> dict[str, bytes]:
    """Every object of the clip store (in its prefix when under a root) and both CSVs."""
    store = storage.join(storage.resolve(out / "clips.zarr"), "clips.zarr") if root else str(out / "clips.zarr")
    return {**{f"clips.zarr/{k}": v for k, v in files(store).items()},
            **{name: (out / name).read_bytes() for name in ("manifest.csv", "rejected.csv")}}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("videos", ["mp4", "mixed"])
def test_preprocess_on_ray_into_a_bucket_equals_local(videos, workers, local_ray, source, small_shards, ffmpeg,
                                                      s3_bucket, s3_requests, tmp_path):
    if videos == "mixed":  # odd sizes, grey ffv1 in mkv, audio, variable frame rate, a transparent GIF
        unusual_valid_inputs(tmp_path / "src", ffmpeg)
        source = tmp_path / "src"
    params = data_params(source)
    local = build(params, tmp_path / "local")
    s3_requests.calls.clear()
    ray_run = build(params, tmp_path / "ray", s3_bucket + f"/{videos}{workers}", on_ray(workers))
    assert ray_run.counts == local.counts and ray_run.counts["train"]["clips"] > 4
    assert outputs(tmp_path / "ray", root=True) == outputs(tmp_path / "local")
    key = storage.resolve(tmp_path / "ray/clips.zarr").split("/", 3)[3]
    shards = {k: n for k, n in s3_requests.count("put_object", key + "/clips.zarr/").items() if "/c/" in k}
    assert shards and set(shards.values()) == {1}, shards  # one writer, one PUT per shard object


def test_a_ray_worker_killed_mid_stage_is_replaced_and_the_bytes_stay(local_ray, source, small_shards, tmp_path,
                                                                      monkeypatch):
    params = data_params(source)
    build(params, tmp_path / "local")
    died = tmp_path / "died"
    real = clip_store.load_clips

    def dies_once(root, params, item):  # pickled by value into the Ray worker (a local function)
        if item.path.endswith("03.mp4") and not died.exists():
            died.touch()
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process, mid-task
        return real(root, params, item)

    monkeypatch.setattr(clip_store, "load_clips", dies_once)
    build(params, tmp_path / "ray", compute=on_ray(2))
    assert died.exists()  # the worker did die, and its task ran again elsewhere
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")


@pytest.mark.parametrize("workers", [1, 2])
def test_tokenize_on_ray_into_a_bucket_equals_local(workers, local_ray, source, small_shards, vqvae, s3_bucket,
                                                    tmp_path, monkeypatch):
    from videogpt import tokens
    monkeypatch.setattr(tokens, "BLOCK", 8)  # 5 blocks of work (21 train clips, 9 test)
    params = data_params(source)
    build(params, tmp_path / "local")
    build(params, tmp_path / "ray", s3_bucket + f"/tok{workers}")
    local = tokens.build_token_store(vqvae, tmp_path / "local/clips.zarr", tmp_path / "local/tokens.zarr",
                                     fingerprint="fp", batch_size=4, progress=False)
    counts = tokens.build_token_store(vqvae, tmp_path / "ray/clips.zarr", tmp_path / "ray/tokens.zarr",
                                      fingerprint="fp", batch_size=4, progress=False, root=s3_bucket + f"/tok{workers}",
                                      compute=on_ray(workers))
    assert counts == local == {"train": 21, "test": 9}
    prefix = storage.resolve(tmp_path / "ray/tokens.zarr")
    assert files(storage.join(prefix, "tokens.zarr")) == files(str(tmp_path / "local/tokens.zarr"))


RAY_BUILD = """
import sys
from videogpt.config import ComputeParams, DataParams
from videogpt.data import clip_store
clip_store.SHARD, clip_store.LABEL_CHUNK = 4, 8
src, out, workers, *root = sys.argv[1:]
params = DataParams(source=src, resolution=8, sequence_length=4, num_workers=1)
clip_store.build_clip_store(params, out + "/clips.zarr", out + "/manifest.csv", out + "/rejected.csv", progress=False,
                            compute=ComputeParams(engine="ray", workers=int(workers)), root=root[0] if root else None)
"""  # preprocess on Ray in a process of its own: python -c RAY_BUILD <source> <out folder> <workers> [<root>]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_preprocess_on_ray_killed_mid_stage_resumes_and_decodes_fewer_videos(where, local_ray, small_shards, tmp_path,
                                                                             capsys, request):
    """The stage's own process SIGKILLed once a shard is written (its Ray workers die with it): run again, it
    continues after the last whole shard, decoding fewer videos, and ends with the local engine's bytes; in
    the default layout, and under storage.root in a moto bucket (the shards in the unfinished prefix, the
    record and CSVs in the local '.prefix.tmp' folder), where no reader would take the unfinished prefix."""
    src = tmp_path / "src"
    for i in range(40):
        frames = np.random.default_rng(i).integers(0, 256, (12, 16, 16, 3), np.uint8)
        write_mp4(src / ("train" if i < 30 else "test") / "ab"[i % 2] / f"{i:02d}.mp4", frames, fps=8)
    params = data_params(src)
    build(params, tmp_path / "local")
    root = [request.getfixturevalue("s3_bucket") + "/killed"] if where == "s3" else []
    # its own process group: the kill takes the local Ray it started with it, as when its machine goes
    proc = subprocess.Popen([sys.executable, "-c", RAY_BUILD, str(src), str(tmp_path / "ray"), "1", *root],
                            start_new_session=True)
    work = tmp_path / ("ray/clips.zarr.prefix.tmp" if root else "ray/clips.zarr.tmp")
    progress = work / clip_store.PROGRESS
    deadline = time.monotonic() + 300
    while not progress.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert progress.exists() and not (tmp_path / "ray/clips.zarr").exists()  # killed mid-stage, nothing final
    if root:
        prefixes = storage.filesystem(root[0] + "/clips")[0].ls(root[0] + "/clips")
        assert len(prefixes) == 1 and not storage.is_complete("s3://" + prefixes[0])
        with pytest.raises(storage.IncompleteError, match="_COMPLETE"):  # what every reader of a prefix calls
            storage.read_marker("s3://" + prefixes[0])
    build(params, tmp_path / "ray", *root, compute=on_ray(1))
    message = capsys.readouterr().err
    done, total = map(int, message.split("resuming after ")[1].split(" items")[0].split(" of "))
    assert 0 < done < total == 40, message  # the videos before `done` were not decoded again
    assert outputs(tmp_path / "ray", root=bool(root)) == outputs(tmp_path / "local")
    assert not work.exists()


@pytest.fixture(scope="module")
def i3d_weights(tmp_path_factory):
    import torch
    from i3d_layout import published_layout_state_dict
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(published_layout_state_dict(seed=0), path)
    return path


def stats_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("workers", [1, 2])
def test_fvd_statistics_on_ray_from_a_bucket_equal_local(workers, local_ray, source, small_shards, i3d_weights,
                                                         s3_bucket, tmp_path, monkeypatch):
    """The real-set I3D statistics: parts of clips featurised on the Ray workers, their per-trial sums (n, Σx,
    Σxxᵀ) added in part order here: the statistics files' bytes equal the local engine's."""
    from videogpt import evaluation
    from videogpt.metrics.frechet import load_stats
    monkeypatch.setattr(evaluation, "PART_CLIPS", 1)  # a part per clip of the trials (2 of the 3 test clips)
    data = dataclasses.replace(data_params(source), resolution=16, sequence_length=10)  # one clip per video
    build(data, tmp_path / "local")
    build(data, tmp_path / "ray", s3_bucket + f"/fvd{workers}")
    ev = {"i3d_weights": str(i3d_weights), "n_real": 2, "n_trials": 3, "batch_size": 2}
    params = parse({"data": {"resolution": 16, "sequence_length": 10}, "vqvae": {"downsample": [2, 4, 4]},
                    "eval": ev})
    local = evaluation.compute_real_stats(params, clips_path=tmp_path / "local/clips.zarr",
                                          out_dir=tmp_path / "local/stats")
    on = dataclasses.replace(params, compute=on_ray(workers))
    ray_info = evaluation.compute_real_stats(on, clips_path=tmp_path / "ray/clips.zarr", out_dir=tmp_path / "ray/stats")
    assert local["available"] and ray_info == local
    assert stats_bytes(tmp_path / "ray/stats") == stats_bytes(tmp_path / "local/stats")
    mu, sigma, _ = load_stats(tmp_path / "ray/stats/stats_trial000.npz")
    assert mu.shape == (400,) and np.trace(sigma) > 0


def test_generated_feature_sums_on_ray_equal_local(local_ray, i3d_weights):
    import torch

    from videogpt.config import EvalParams
    from videogpt.evaluation import _GeneratedFeatureSums, _I3D
    from videogpt.vqvae import VQVAE, VQVAEConfig
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(input_shape=(10, 16, 16), n_hiddens=16, res_hiddens=8, n_res_layers=1,
                           downsample=(2, 4, 4), n_codes=16, embedding_dim=8, n_heads=2)).eval()
    tokens = np.random.default_rng(0).integers(0, 16, (6, 5, 4, 4))
    parts = [(a, tokens[a:a + 2]) for a in range(0, 6, 2)]  # trial 0: videos 0-2, trial 1: 3-5

    def sums(compute):
        fn = _GeneratedFeatureSums(vq, _I3D(EvalParams(i3d_weights=str(i3d_weights)), "videogpt"), 10, 3, 2, 2,
                                   "32", None)
        total = None
        for part in ordered_map(fn, parts, compute, gpus=True):
            total = part if total is None else [a + b for a, b in zip(total, part)]
        return total

    local, ray_sums = sums(None), sums(on_ray(2))
    assert [s.n for s in local] == [3, 3]
    for a, b in zip(local, ray_sums):
        assert a.n == b.n and a.sum.tobytes() == b.sum.tobytes() and a.outer.tobytes() == b.outer.tobytes()


@pytest.mark.parametrize("n_frames", [None, 8])  # the clip length (one window), and twice it (sliding windows)
def test_sample_on_ray_splits_the_videos_and_equals_local(n_frames, local_ray, source, tmp_path, monkeypatch):
    """The sample stage under compute.engine: ray: parts of whole batches drawn on 2 workers, each video with its
    own randomness (sample i: (sample.seed, i)): the samples' bytes equal the local engine's."""
    import json

    import zarr
    from test_action_prior import make_params, train_models

    from videogpt import generate
    monkeypatch.setattr(generate, "PART_BATCHES", 1)  # 4 parts of 2 videos (the last of 1)
    params = make_params(
        data={"source": str(source), "resolution": 8, "sequence_length": 4, "num_workers": 1},
        vqvae={"n_hiddens": 16, "res_hiddens": 8, "n_res_layers": 1, "downsample": [2, 2, 2], "n_codes": 16,
               "embedding_dim": 8, "max_steps": 2, "batch_size": 4, "checkpoint_every": 100, "val_every": 100},
        prior={"n_layer": 1, "n_head": 2, "n_embd": 16, "warmup_steps": 0, "max_steps": 2, "batch_size": 4,
               "checkpoint_every": 100, "val_every": 100},
        sample={"n_samples": 2, "batch_size": 2, "n_frames": n_frames}, trainer={"log_every_n_steps": 1})
    vqvae_dir, prior_dir = train_models(params, tmp_path)
    indices = tmp_path / "indices.json"  # two trials of 4 and 3 generated videos
    indices.write_text(json.dumps({"trials": [[0, 1], [1, 2]], "generated": [[0, 1, 0, 1], [1, 2, 1]]}))

    def sample(params, out):
        generate.run_sample_stage(params, prior_dir=prior_dir, vqvae_dir=vqvae_dir, clips_path=tmp_path / "clips.zarr",
                                  manifest_path=tmp_path / "manifest.csv", indices_path=indices, out_dir=out)
        root = zarr.open_group(str(out / "samples.zarr"), mode="r")
        return {k: np.asarray(root[k][:]).tobytes() for k in ("tokens", "videos", "real_index", "trial")}

    local = sample(params, tmp_path / "local")
    assert sample(dataclasses.replace(params, compute=on_ray(2)), tmp_path / "ray") == local
    assert len(np.unique(np.frombuffer(local["videos"], np.uint8))) > 1
