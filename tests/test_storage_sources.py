"""data.source in object storage (a bucket prefix of class folders) and as video2dataset-style WebDataset tar
shards (local, and in a moto S3 bucket, tests/s3.py): the clips equal those from the same videos in a local
folder."""
import dataclasses
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from test_storage_stores import build, data_params, source  # noqa: F401 (source: a fixture)
from videogpt import storage
from videogpt.config import ParamsError
from videogpt.data.webdataset import expand_braces


def arrays(out: Path) -> dict:
    group = zarr.open_group(str(out / "clips.zarr"), mode="r")
    return {f"{s}/{a}": group[s][a][:] for s in ("train", "test") for a in ("clips", "labels")}


def assert_same_clips(out: Path, expected: Path) -> None:
    got, want = arrays(out), arrays(expected)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert zarr.open_group(str(out / "clips.zarr"), mode="r").attrs["class_names"] == ["a", "b"]


def test_expand_braces():
    assert expand_braces("s3://b/x/{00008..00010}.tar") == [f"s3://b/x/000{n:02d}.tar" for n in (8, 9, 10)]
    assert expand_braces("{1..2}-{0..1}.tar") == ["1-0.tar", "1-1.tar", "2-0.tar", "2-1.tar"]
    assert expand_braces("one.tar") == ["one.tar"]


def test_a_bucket_prefix_of_class_folders_gives_the_local_clips(source, s3_bucket, tmp_path):  # noqa: F811
    params = data_params(source)
    build(params, tmp_path / "local")
    fs, bucket = storage.filesystem(s3_bucket)
    fs.put(str(source), bucket + "/videos", recursive=True)
    remote = dataclasses.replace(params, source=s3_bucket + "/videos")
    summary = build(remote, tmp_path / "remote")
    assert summary.counts["train"] == {"videos": 7, "clips": 21} and summary.counts["rejected"] == 1
    assert_same_clips(tmp_path / "remote", tmp_path / "local")
    for name in ("manifest.csv", "rejected.csv"):  # paths relative to data.source: the same rows
        assert (tmp_path / "remote" / name).read_text() == (tmp_path / "local" / name).read_text()
    with pytest.raises(ParamsError, match="data.source: folder 's3://.*/nothing' does not exist"):
        build(dataclasses.replace(params, source=s3_bucket + "/nothing"), tmp_path / "none")


def write_shards(source: Path, out: Path, per_shard: int) -> list[str]:
    """The videos of a local train/test class-folder tree as WebDataset shards: <key>.mp4 + <key>.json
    (label, split, caption) + <key>.txt, keys numbered in the local folder's clip order."""
    videos = sorted(source.rglob("*.mp4"), key=lambda p: (("train", "test").index(p.parts[-3]), str(p)))
    names = []
    for first in range(0, len(videos), per_shard):
        name = f"{first // per_shard:05d}.tar"
        with tarfile.open(out / name, "w") as tar:
            for key, video in enumerate(videos[first:first + per_shard], first):
                meta = {"label": video.parts[-2], "split": video.parts[-3], "url": f"https://example/{key}"}
                for ext, data in (("mp4", video.read_bytes()), ("json", json.dumps(meta).encode()),
                                  ("txt", b"a caption")):
                    info = tarfile.TarInfo(f"{key:08d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        names.append(name)
    return names


@pytest.mark.parametrize("where", ["local", "s3"])
def test_webdataset_shards_give_the_local_clips(where, source, tmp_path, request):  # noqa: F811
    params = data_params(source)
    build(params, tmp_path / "local")
    shards = tmp_path / "shards"
    shards.mkdir()
    names = write_shards(source, shards, per_shard=4)
    assert names == ["00000.tar", "00001.tar", "00002.tar"]
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        fs, path = storage.filesystem(bucket)
        fs.put(str(shards), path + "/wds", recursive=True)
        location = {"source": bucket + "/wds/{00000..00002}.tar"}  # detected by the pattern
    else:
        location = {"source": str(shards), "format": "webdataset"}  # a folder of shards
    wds = dataclasses.replace(params, **location, label_key="label", split_key="split")
    summary = build(wds, tmp_path / "wds")
    assert summary.counts["train"] == {"videos": 7, "clips": 21} and summary.counts["rejected"] == 1
    assert_same_clips(tmp_path / "wds", tmp_path / "local")
    manifest = (tmp_path / "wds/manifest.csv").read_text().splitlines()
    assert manifest[1].startswith("0,train,00000.tar/00000000.mp4,0,a,")
    rejected = (tmp_path / "wds/rejected.csv").read_text()
    # train/a/short.mp4 (two black frames), the 5th sample: rejected for the same reason as from the folder,
    # found by decoding the stream again as stored
    reason = ',train,a still image: 1 frame,"one picture in the file, decoded as 2 identical frames"'
    assert "00001.tar/00000004.mp4" + reason in rejected
    assert "train/a/short.mp4" + reason in (tmp_path / "local/rejected.csv").read_text()

    # Neither a split key nor a split ratio: a ParamsError naming the key, before any decoding
    with pytest.raises(ParamsError, match="data.split_key: the shards' samples need a split"):
        build(dataclasses.replace(wds, split_key=None), tmp_path / "nosplit")
