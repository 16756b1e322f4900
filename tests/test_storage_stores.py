"""The clip and token stores in object storage (storage.root on a moto S3 bucket, tests/s3.py) and on a local
root: the same bytes as the default local store, every shard object written once, an immutable prefix reused,
and a prefix without _COMPLETE.json refused."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from videogpt import storage
from videogpt.config import parse
from videogpt.data import clip_store
from videogpt.data.ffmpeg_io import write_mp4


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """10 videos of 3 clips each at sequence_length 4 (7 train, 3 test, two classes) and one of two black
    frames (rejected as a still image)."""
    src = tmp_path_factory.mktemp("src")
    for i in range(10):
        frames = np.random.default_rng(i).integers(0, 256, (12, 16, 16, 3), np.uint8)
        write_mp4(src / ("train" if i < 7 else "test") / "ab"[i % 2] / f"{i:02d}.mp4", frames, fps=8)
    write_mp4(src / "train/a/short.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=8)
    return src


@pytest.fixture
def small_shards(monkeypatch):
    """4 clips per shard and 8 labels per chunk: several shards and label chunks, the last ones partial."""
    monkeypatch.setattr(clip_store, "SHARD", 4)
    monkeypatch.setattr(clip_store, "LABEL_CHUNK", 8)


def data_params(source: Path):
    return dataclasses.replace(parse({}).data, source=str(source), resolution=8, sequence_length=4, num_workers=1)


def build(params, out: Path, root=None, compute=None):
    return clip_store.build_clip_store(params, out / "clips.zarr", out / "manifest.csv", out / "rejected.csv",
                                       progress=False, root=root, compute=compute)


def files(folder: str) -> dict[str, bytes]:
    fs, path = storage.filesystem(folder)
    return {name[len(path):].lstrip("/"): fs.cat_file(name) for name in sorted(fs.find(path))}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_clip_store_under_a_storage_root_equals_the_local_store(where, source, small_shards, tmp_path, request):
    params = data_params(source)
    build(params, tmp_path / "local")
    if where == "s3":
        counter = request.getfixturevalue("s3_requests")
        root = request.getfixturevalue("s3_bucket") + "/runs"
    else:
        counter, root = None, str(tmp_path / "root")
    summary = build(params, tmp_path / "work", root)
    assert summary.counts["train"] == {"videos": 7, "clips": 21} and summary.counts["rejected"] == 1

    pointer = tmp_path / "work/clips.zarr"
    prefix = storage.resolve(pointer)
    assert pointer.is_file() and prefix.startswith(root + "/clips/")
    remote = files(storage.join(prefix, "clips.zarr"))
    assert remote == files(str(tmp_path / "local/clips.zarr"))  # every object, byte for byte
    # clip shards of 21 + 9 clips; label chunks of 8: train's first holds only label 0 (class a), zarr's fill
    # value, so it is not stored
    assert len([k for k in remote if "/c/" in k]) == 6 + 3 + 2 + 2
    for name in ("manifest.csv", "rejected.csv"):
        assert (tmp_path / "work" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
        assert files(prefix)[name] == (tmp_path / "local" / name).read_bytes()
    marker = storage.read_marker(prefix)
    assert marker["counts"] == summary.counts and set(marker["objects"]) == set(files(prefix)) - {storage.MARKER}
    np.testing.assert_array_equal(clip_store.read_clips(pointer, "test"),
                                  clip_store.read_clips(tmp_path / "local/clips.zarr", "test"))
    assert clip_store.store_attrs(pointer) == clip_store.store_attrs(tmp_path / "local/clips.zarr")

    if counter is not None:  # each shard and chunk object PUT exactly once
        bucket_key = prefix.split("/", 3)[3]
        puts = counter.count("put_object", bucket_key + "/clips.zarr/")
        shards = {k: n for k, n in puts.items() if "/c/" in k}
        assert len(shards) == 13 and set(shards.values()) == {1}, shards
        assert not counter.count("create_multipart_upload")
        counter.calls.clear()

    # The same inputs again: the complete prefix is reused, nothing is written there
    again = build(params, tmp_path / "again", root)
    assert again.counts == summary.counts and storage.resolve(tmp_path / "again/clips.zarr") == prefix
    if counter is not None:
        assert not counter.count("put_object", bucket_key)
    # Other params: another prefix
    other = build(dataclasses.replace(params, resolution=16), tmp_path / "other", root)
    assert storage.resolve(tmp_path / "other/clips.zarr") != prefix and other.counts == summary.counts


def test_a_prefix_without_its_marker_is_refused_and_rebuilt(source, small_shards, s3_bucket, tmp_path):
    params = data_params(source)
    build(params, tmp_path / "work", s3_bucket)
    pointer = tmp_path / "work/clips.zarr"
    prefix = storage.resolve(pointer)
    fs, path = storage.filesystem(prefix)
    fs.rm(storage.join(path, storage.MARKER))  # as if the writer died before its last write
    with pytest.raises(storage.IncompleteError, match=f"{prefix}: no _COMPLETE.json"):
        clip_store.read_clips(pointer, "train")
    fs.rm(storage.join(path, "clips.zarr/train/clips/c/1/0/0/0/0"))  # and a shard missing
    build(params, tmp_path / "work", s3_bucket)  # deleted and written again
    assert storage.resolve(pointer) == prefix and fs.exists(storage.join(path, "clips.zarr/train/clips/c/1/0/0/0/0"))
    assert clip_store.read_clips(pointer, "train").shape == (21, 4, 8, 8, 3)


@pytest.fixture(scope="module")
def vqvae():
    import torch

    from videogpt.vqvae import VQVAE, VQVAEConfig
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(input_shape=(4, 8, 8), n_hiddens=16, res_hiddens=8, n_res_layers=1,
                              downsample=(2, 2, 2), n_codes=64, embedding_dim=8))
    model.train()
    model(torch.rand(8, 3, 4, 8, 8) - 0.5)  # data-dependent codebook init
    return model.eval()


def test_token_store_under_a_storage_root_equals_the_local_store(source, small_shards, vqvae, s3_requests,
                                                                 s3_bucket, tmp_path):
    from videogpt.tokens import TokenDataset, build_token_store, open_token_store
    params = data_params(source)
    build(params, tmp_path / "local")
    build(params, tmp_path / "work", s3_bucket)
    local = build_token_store(vqvae, tmp_path / "local/clips.zarr", tmp_path / "local/tokens.zarr", fingerprint="fp",
                              batch_size=4, progress=False)
    s3_requests.calls.clear()
    pointer = tmp_path / "work/tokens.zarr"
    counts = build_token_store(vqvae, tmp_path / "work/clips.zarr", pointer, fingerprint="fp", batch_size=4,
                               progress=False, root=s3_bucket)
    assert counts == local == {"train": 21, "test": 9}
    prefix = storage.resolve(pointer)
    assert prefix.startswith(s3_bucket + "/tokens/") and storage.read_marker(prefix)["counts"] == counts
    assert files(storage.join(prefix, "tokens.zarr")) == files(str(tmp_path / "local/tokens.zarr"))
    local_objects = files(str(tmp_path / "local/tokens.zarr"))
    assert set(files(prefix)) == {storage.MARKER} | {f"tokens.zarr/{k}" for k in local_objects}
    chunks = {k: n for k, n in s3_requests.count("put_object").items() if "/c/" in k}
    assert chunks and set(chunks.values()) == {1}, chunks  # one block of BLOCK clips per split: one PUT each
    np.testing.assert_array_equal(TokenDataset(pointer, "test").tokens,
                                  TokenDataset(tmp_path / "local/tokens.zarr", "test").tokens)
    assert open_token_store(pointer, expect_fingerprint="fp").attrs["counts"] == counts
    # Encoded once: the same clips and model again reuse the prefix
    s3_requests.calls.clear()
    build_token_store(vqvae, tmp_path / "work/clips.zarr", tmp_path / "again.zarr", fingerprint="fp", batch_size=4,
                      progress=False, root=s3_bucket)
    assert storage.resolve(tmp_path / "again.zarr") == prefix and not s3_requests.count("put_object")
    fs, path = storage.filesystem(prefix)
    fs.rm(storage.join(path, storage.MARKER))
    with pytest.raises(storage.IncompleteError, match=f"{prefix}: no _COMPLETE.json"):
        open_token_store(pointer)


def test_storage_root_switched_on_and_off_in_one_workspace(source, small_shards, vqvae, tmp_path):
    """A local store replaced by a pointer file and back (dvc exp run -S storage.root=... in one workspace)."""
    from videogpt.tokens import build_token_store, open_token_store
    params, work, root = data_params(source), tmp_path / "work", str(tmp_path / "root")

    def both(root):
        build(params, work, root)
        build_token_store(vqvae, work / "clips.zarr", work / "tokens.zarr", fingerprint="fp", batch_size=4,
                          progress=False, root=root)
        return (clip_store.read_clips(work / "clips.zarr", "train"),
                open_token_store(work / "tokens.zarr")["train"]["tokens"][:])

    local = both(None)
    assert (work / "clips.zarr").is_dir() and (work / "tokens.zarr").is_dir()
    pointed = both(root)
    assert storage.is_pointer(work / "clips.zarr") and storage.is_pointer(work / "tokens.zarr")
    again = both(None)
    assert (work / "clips.zarr").is_dir() and (work / "tokens.zarr").is_dir()
    for a, b, c in zip(local, pointed, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
