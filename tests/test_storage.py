"""videogpt.storage: URLs, immutable prefixes, _COMPLETE.json markers and pointer files, on a local root and on
an S3 bucket (a moto server on 127.0.0.1, tests/s3.py)."""
import hashlib
import json
import os

import pytest

from videogpt import storage, training
from videogpt.config import TrainerParams


def test_join_keeps_urls_intact():
    assert storage.join("s3://b", "k") == "s3://b/k"
    assert storage.join("s3://b/", "/p/", "x.json") == "s3://b/p/x.json"
    assert storage.join("gs://b/root", "clips", "abc") == "gs://b/root/clips/abc"
    assert storage.join("/tmp/r", "clips") == "/tmp/r/clips"
    assert storage.local_path("file:///tmp/r") == "/tmp/r" and storage.local_path("s3://b/k") is None
    assert storage.local_path("data/x") == "data/x"


def test_content_hash_is_canonical():
    assert storage.content_hash({"a": 1, "b": [2, 3]}) == storage.content_hash({"b": [2, 3], "a": 1})
    assert storage.content_hash({"a": 1}) == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert storage.content_hash({"a": 1}) != storage.content_hash({"a": 2})


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/runs"


def _write(prefix: str, objects: dict[str, bytes]) -> None:
    fs, path = storage.filesystem(prefix)
    for name, data in objects.items():
        fs.makedirs(os.path.dirname(storage.join(path, name)), exist_ok=True)
        fs.pipe_file(storage.join(path, name), data)


def test_marker_and_pointer_round_trip(root, tmp_path):
    key = storage.content_hash({"params": {"resolution": 32}})
    prefix = storage.stage_prefix(root, "clips", key)
    assert prefix == storage.join(root, "clips", key)
    objects = {"a.zarr/zarr.json": b'{"x": 1}', "a.zarr/c/0/0": bytes(range(256)) * 3, "manifest.csv": b"clip\n0\n"}
    _write(prefix, objects)
    # Before the marker: readers refuse the prefix, naming it
    assert not storage.is_complete(prefix)
    with pytest.raises(storage.IncompleteError, match=prefix.replace("/", ".")):
        storage.read_marker(prefix)
    marker = storage.write_marker(prefix, key=key, counts={"train": 3})
    assert storage.is_complete(prefix)
    assert storage.read_marker(prefix) == json.loads(json.dumps(marker))
    assert marker["objects"] == {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                                 for name, data in objects.items()}
    pointer = tmp_path / "data" / "clips.zarr"
    storage.write_pointer(pointer, prefix, marker)
    assert storage.is_pointer(pointer)
    assert storage.resolve(pointer) == prefix
    assert storage.resolve(pointer, "a.zarr") == storage.join(prefix, "a.zarr")
    recorded = json.loads(pointer.read_text())
    assert recorded["url"] == prefix and recorded["hash"] == marker["hash"] and recorded["counts"] == {"train": 3}
    assert "testing" not in pointer.read_text()  # no credentials in what is written
    # training streams whole shards from a store in a bucket, reached through its pointer too
    assert training.streams(TrainerParams(), pointer) == storage.is_url(prefix)
    # A prefix whose content changed after the pointer was written: refused
    _write(prefix, {"manifest.csv": b"clip\n1\n"})
    storage.write_marker(prefix, key=key, counts={"train": 3})
    with pytest.raises(ValueError, match="pointer records"):
        storage.resolve(pointer)
    # The marker gone (an interrupted rewrite): refused, naming the prefix
    storage.filesystem(prefix)[0].rm(storage.join(storage.filesystem(prefix)[1], storage.MARKER))
    with pytest.raises(storage.IncompleteError, match="no _COMPLETE.json"):
        storage.resolve(pointer)
    storage.remove(prefix)
    assert not storage.filesystem(prefix)[0].exists(storage.filesystem(prefix)[1])


def test_a_local_store_or_url_is_read_where_it_is(tmp_path):
    (tmp_path / "clips.zarr").mkdir()
    assert storage.resolve(tmp_path / "clips.zarr") == str(tmp_path / "clips.zarr")
    assert storage.resolve("s3://b/clips.zarr") == "s3://b/clips.zarr"
    assert storage.zarr_store(tmp_path / "x") == str(tmp_path / "x")
    assert storage.zarr_store(f"file://{tmp_path}/x") == f"{tmp_path}/x"
