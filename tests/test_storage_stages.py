"""The stages with storage.root on a local S3 server (moto, tests/s3.py), run by DVC as a user would: the outs
are pointer files, the stores sit under immutable prefixes in the bucket and equal the default local stores,
also when the stages decode and encode on Ray (compute.engine: ray, a local Ray the stages start)."""
import json

import pytest
from dvc_repo import TINY, copy_repo, dvc

from test_storage_stores import files, source  # noqa: F401 (source: a fixture)
from videogpt import storage
from videogpt.checkpoint import load_vqvae
from videogpt.config import load
from videogpt.data.clip_store import build_clip_store
from videogpt.saved import fingerprint
from videogpt.tokens import build_token_store


@pytest.mark.slow  # trains the tiny VQ-VAE through DVC (about 75 s)
def test_dvc_repro_with_the_stores_in_a_bucket_on_ray(s3_bucket, tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="the cluster extra")
    repo = tmp_path / "repo"
    root = s3_bucket + "/videogpt"
    env = copy_repo(repo, {**TINY, "storage": {"root": root}, "compute": {"engine": "ray", "workers": 2}})
    out = dvc(repo, env, "repro", "tokenize")
    assert out.count("ray: 2 workers on a local Ray") == 2, out  # preprocess and tokenize ran on Ray
    pointers = {name: json.loads((repo / "data" / name).read_text()) for name in ("clips.zarr", "tokens.zarr")}
    assert pointers["clips.zarr"]["url"].startswith(root + "/clips/")
    assert pointers["tokens.zarr"]["url"].startswith(root + "/tokens/")
    lock = (repo / "dvc.lock").read_text()
    assert "path: data/clips.zarr" in lock and "path: data/tokens.zarr" in lock  # DVC tracks the pointers
    assert "up to date" in dvc(repo, env, "status", "--with-deps", "tokenize")

    # The same stores built locally (the local engine, no storage.root), from the same videos and VQ-VAE: the same
    # bytes
    monkeypatch.chdir(repo)  # data.source is relative to the repository, and recorded as written
    params = load("params.yaml")
    local = tmp_path / "local"
    build_clip_store(params.data, local / "clips.zarr", local / "manifest.csv", local / "rejected.csv", progress=False)
    build_token_store(load_vqvae("models/vqvae"), local / "clips.zarr", local / "tokens.zarr",
                      fingerprint=fingerprint("models/vqvae"), batch_size=params.tokenize.batch_size,
                      progress=False)
    for name in ("clips.zarr", "tokens.zarr"):
        prefix = pointers[name]["url"]
        assert files(storage.join(prefix, name)) == files(str(local / name)), name
    assert (repo / "data/manifest.csv").read_bytes() == (local / "manifest.csv").read_bytes()

    # Nothing changed: DVC reruns nothing; the prefixes stay as they are
    out = dvc(repo, env, "repro", "tokenize")
    assert "didn't change" in out and "Running stage" not in out
    assert storage.read_marker(pointers["tokens.zarr"]["url"])["hash"] == pointers["tokens.zarr"]["hash"]


@pytest.mark.slow  # real DVC runs
def test_dvc_repro_with_data_source_in_a_bucket(source, s3_bucket, tmp_path):  # noqa: F811
    """DVC hashes the bucket prefix as the preprocess dep (dvc-s3, same AWS_* environment) and reruns the stage
    when a video there changes."""
    fs, bucket = storage.filesystem(s3_bucket)
    fs.put(str(source), bucket + "/videos", recursive=True)
    repo = tmp_path / "repo"
    env = copy_repo(repo, {**TINY, "data": {**TINY["data"], "source": s3_bucket + "/videos", "num_workers": 1}})
    dvc(repo, env, "repro", "preprocess")
    lock = (repo / "dvc.lock").read_text()
    assert f"path: {s3_bucket}/videos" in lock and "nfiles: 11" in lock
    assert "up to date" in dvc(repo, env, "status", "preprocess")
    assert "train/a/short.mp4,train,a still image" in (repo / "data/rejected.csv").read_text()
    fs.rm(bucket + "/videos/train/a/short.mp4")
    assert "modified" in dvc(repo, env, "status", "preprocess")
    dvc(repo, env, "repro", "preprocess")
    assert "short.mp4" not in (repo / "data/rejected.csv").read_text()
