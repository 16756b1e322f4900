"""Dataset adapters (data.format ucf101, bair, moving_mnist, frames, auto) on real on-disk structures built
here: AVI files made by ffmpeg, TFRecord files written byte by byte to the TFRecord spec with hand-encoded
tf.train.Example protobufs, a Moving-MNIST .npy, PNG/JPG frame folders."""
import struct
from dataclasses import replace
from pathlib import Path

import google_crc32c
import numpy as np
import pandas as pd
import pytest
import zarr
from PIL import Image

from videogpt.config import DataParams, ParamsError
from videogpt.data import tfrecord
from videogpt.data.ffmpeg_io import decode_video
from videogpt.data.frames import natural_key, read_frame_folder
from videogpt.data.clip_store import build_clip_store
from videogpt.data.formats import detect_format
from videogpt.data.rawframes import scale_frames
from videogpt.data.tfrecord import (TFRecordError, crc32c, crc32c_numpy, masked_crc32c, parse_example,
                                    read_tfrecords)

TOLERANCE = 6  # grey levels lost to lossy codecs (mpeg4, JPEG)


def params(source, **overrides) -> DataParams:
    return replace(DataParams(source=str(source), resolution=8, sequence_length=4, num_workers=1), **overrides)


def build(p: DataParams, out: Path):
    summary = build_clip_store(p, out / "clips.zarr", out / "manifest.csv", out / "rejected.csv", progress=False)
    return (summary, zarr.open_group(out / "clips.zarr", mode="r"),
            pd.read_csv(out / "manifest.csv", keep_default_na=False),
            pd.read_csv(out / "rejected.csv", keep_default_na=False))


# ------------------------------------------------------------------------------------------------
# CRC32C


def crc32c_bitwise(data: bytes) -> int:
    """The definition, bit by bit (no table): reflected Castagnoli polynomial, init and xorout all ones."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("data, expected", [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),                 # the standard check value
    (bytes(32), 0x8A9136AA),                    # RFC 3720 (iSCSI) B.4 test vectors
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
])
def test_crc32c_known_vectors(data, expected):
    assert crc32c(data) == crc32c_numpy(data) == crc32c_bitwise(data) == expected


def test_crc32c_numpy_long_inputs_match_the_definition():
    rng = np.random.default_rng(0)
    medium = rng.integers(0, 256, 4 * 1024 + 37, dtype=np.uint8).tobytes()  # takes the vectorised path
    assert crc32c_numpy(medium) == crc32c_bitwise(medium)
    large = rng.integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    assert crc32c_numpy(large) == google_crc32c.value(large) == crc32c(large)
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


# ------------------------------------------------------------------------------------------------
# TFRecord + tf.train.Example, written here independently of the library


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def bytes_feature(value: bytes) -> bytes:
    return ld(1, ld(1, value))                          # Feature.bytes_list{value}


def float_feature(values, packed=True) -> bytes:
    if packed:
        return ld(2, ld(1, struct.pack(f"<{len(values)}f", *values)))
    return ld(2, b"".join(varint(1 << 3 | 5) + struct.pack("<f", v) for v in values))


def int64_feature(values) -> bytes:
    return ld(3, ld(1, b"".join(varint(v) for v in values)))


def example(features: dict[str, bytes]) -> bytes:
    """tf.train.Example{features: Features{feature: map<string, Feature>}}."""
    entries = b"".join(ld(1, ld(1, key.encode()) + ld(2, feature)) for key, feature in features.items())
    return ld(1, entries)


def masked(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_tfrecord(path: Path, records: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for record in records:
            length = struct.pack("<Q", len(record))
            fh.write(length + struct.pack("<I", masked(length)) + record + struct.pack("<I", masked(record)))
    return path


def bair_record(frames: np.ndarray, actions: np.ndarray | None) -> bytes:
    """One trajectory as the BAIR release stores it (plus image_main and endeffector_pos, unpacked floats)."""
    features = {}
    for i, frame in enumerate(frames):
        features[f"{i}/image_main/encoded"] = bytes_feature(frame[::-1].tobytes())  # another camera: ignored
        features[f"{i}/image_aux1/encoded"] = bytes_feature(frame.tobytes())
        if actions is not None:
            features[f"{i}/action"] = float_feature(actions[i].tolist())
        features[f"{i}/endeffector_pos"] = float_feature([0.5, -1.0, 2.0], packed=False)
    return example(features)


def trajectories(seed: int, n: int, n_frames: int = 30):
    rng = np.random.default_rng(seed)
    return ([rng.integers(0, 256, (n_frames, 64, 64, 3), dtype=np.uint8) for _ in range(n)],
            [rng.normal(size=(n_frames, 4)).astype(np.float32) for _ in range(n)])


def test_parse_example_reads_every_feature_kind():
    data = example({"b": bytes_feature(b"\x00\x01xyz"), "f": float_feature([1.5, -2.0]),
                    "u": float_feature([0.25], packed=False), "i": int64_feature([3, -7, 2**40])})
    data += varint(7 << 3 | 0) + varint(99)  # an unknown field is skipped
    parsed = parse_example(data)
    assert parsed["b"] == [b"\x00\x01xyz"]
    assert parsed["f"].dtype == np.float32 and parsed["f"].tolist() == [1.5, -2.0]
    assert parsed["u"].tolist() == [0.25]
    assert parsed["i"].tolist() == [3, -7, 2**40]


@pytest.fixture
def bair_tree(tmp_path):
    """softmotion30_44k/{train,test}: train 2 trajectories (the second without actions), test 1, and a train
    file whose record 1 is damaged."""
    root = tmp_path / "bair"
    data = root / "softmotion30_44k"
    train_frames, train_actions = trajectories(0, 2)
    test_frames, test_actions = trajectories(1, 1)
    write_tfrecord(data / "train/traj_0_to_1.tfrecords",
                   [bair_record(train_frames[0], train_actions[0]), bair_record(train_frames[1], None)])
    write_tfrecord(data / "test/traj_0_to_0.tfrecords", [bair_record(test_frames[0], test_actions[0])])
    bad = bytearray(write_tfrecord(data / "train/traj_2_to_3.tfrecords",
                                   [bair_record(f, a) for f, a in zip(*trajectories(2, 2))]).read_bytes())
    bad[-5000] ^= 0x01  # inside the data of the last record (record 1)
    (data / "train/traj_2_to_3.tfrecords").write_bytes(bytes(bad))
    return root, (train_frames, train_actions), (test_frames, test_actions)


def test_bair_tfrecords_give_exact_clips_and_actions(bair_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(tfrecord, "_fast_crc32c", None)  # check the CRCs with the numpy implementation
    root, (train_frames, train_actions), (test_frames, test_actions) = bair_tree
    summary, store, manifest, rejected = build(params(root, format="auto", resolution=64, sequence_length=8),
                                               tmp_path / "out")
    assert store.attrs["format"] == "bair" and store.attrs["class_names"] == [] and store.attrs["fps"] is None
    assert summary.counts["train"] == {"videos": 2, "clips": 6} and summary.counts["test"] == {"videos": 1, "clips": 3}
    train = manifest.query("split == 'train'")
    assert train["source"].tolist() == ["softmotion30_44k/train/traj_0_to_1.tfrecords#0"] * 3 + \
        ["softmotion30_44k/train/traj_0_to_1.tfrecords#1"] * 3
    assert train["start_frame"].tolist() == [0, 8, 16] * 2 and set(manifest["label"]) == {-1}
    assert set(manifest[["width", "height"]].itertuples(index=False)) == {(64, 64)}
    clips, actions = store["train/clips"][:], store["train/actions"][:]
    assert actions.shape == (6, 8, 4) and actions.dtype == np.float32
    for i, (record, start) in enumerate(zip([0, 0, 0, 1, 1, 1], train["start_frame"])):
        np.testing.assert_array_equal(clips[i], train_frames[record][start:start + 8])
        if record == 0:
            np.testing.assert_array_equal(actions[i], train_actions[0][start:start + 8])
        else:
            assert np.isnan(actions[i]).all()  # trajectory without actions
    for i, start in enumerate([0, 8, 16]):
        np.testing.assert_array_equal(store["test/clips"][i], test_frames[0][start:start + 8])
        np.testing.assert_array_equal(store["test/actions"][i], test_actions[0][start:start + 8])
    # the damaged file is rejected as a whole, naming the record; the others are kept
    row = rejected.set_index("source").loc["softmotion30_44k/train/traj_2_to_3.tfrecords"]
    assert row["reason"] == "corrupt TFRecord: data CRC mismatch" and row["detail"].startswith("record 1:")
    assert len(rejected) == 1 and summary.counts["rejected"] == 1


def test_bair_resized_with_strides_and_source_at_softmotion(bair_tree, tmp_path):
    root, (train_frames, train_actions), _ = bair_tree
    _, store, manifest, _ = build(params(root / "softmotion30_44k", format="bair", resolution=32, sequence_length=4,
                                         frame_stride=2), tmp_path / "out")
    assert manifest["source"].iloc[0] == "train/traj_0_to_1.tfrecords#0"
    clips = store["train/clips"][:]
    assert clips.shape == (6, 4, 32, 32, 3)
    expected = train_frames[0][8:15:2].reshape(4, 32, 2, 32, 2, 3).mean(axis=(2, 4))  # area = 2x2 mean
    assert np.abs(clips[1] - expected).max() <= 1
    np.testing.assert_array_equal(store["train/actions"][1], train_actions[0][8:15:2])


def test_tfrecord_errors_name_the_file_and_record(tmp_path):
    records = [b"first record", b"second record", b"third"]
    good = write_tfrecord(tmp_path / "good.tfrecords", records).read_bytes()
    assert list(read_tfrecords(tmp_path / "good.tfrecords")) == records
    second = 12 + len(records[0]) + 4  # offset of record 1
    cases = {"data.tfrecords": (second + 12 + 3, "record 1: data CRC mismatch"),
             "length.tfrecords": (second + 1, "record 1: length CRC mismatch"),
             "stored_crc.tfrecords": (len(good) - 1, "record 2: data CRC mismatch")}
    for name, (offset, message) in cases.items():
        damaged = bytearray(good)
        damaged[offset] ^= 0x40
        (tmp_path / name).write_bytes(bytes(damaged))
        with pytest.raises(TFRecordError, match=f"^{tmp_path / name}: {message}"):
            list(read_tfrecords(tmp_path / name))
    (tmp_path / "cut.tfrecords").write_bytes(good[:second + 20])
    with pytest.raises(TFRecordError, match=f"^{tmp_path / 'cut.tfrecords'}: record 1: truncated"):
        list(read_tfrecords(tmp_path / "cut.tfrecords"))


def test_bair_truncated_and_non_trajectory_files_are_rejected(tmp_path):
    data = tmp_path / "bair/softmotion30_44k"
    frames, actions = trajectories(3, 1, n_frames=8)
    write_tfrecord(data / "train/good.tfrecords", [bair_record(frames[0], actions[0])])
    write_tfrecord(data / "test/good.tfrecords", [bair_record(frames[0], None)])
    whole = (data / "train/good.tfrecords").read_bytes()
    (data / "train/cut.tfrecords").write_bytes(whole[:len(whole) // 2])
    write_tfrecord(data / "train/other.tfrecords", [example({"label": int64_feature([1])})])
    (data / "train/README").write_text("x")
    _, store, _, rejected = build(params(tmp_path / "bair", format="bair", resolution=64), tmp_path / "out")
    reasons = dict(zip(rejected["source"], rejected["reason"]))
    assert reasons == {"softmotion30_44k/train/cut.tfrecords": "corrupt TFRecord: truncated",
                       "softmotion30_44k/train/other.tfrecords": "not a BAIR trajectory",
                       "softmotion30_44k/train/README": "not a TFRecord file"}
    assert store["train/clips"].shape[0] == 2 and "actions" not in store["test"]


# ------------------------------------------------------------------------------------------------
# UCF-101


UCF_VIDEOS = {  # path below UCF-101/ -> grey level of its frames (plus sensor-like noise: a video, not a still)
    "HandstandPushups/v_HandStandPushups_g01_c01.avi": 40,
    "HandstandPushups/v_HandStandPushups_g08_c01.avi": 80,
    "Basketball/v_Basketball_g01_c01.avi": 120,
    "Basketball/v_Basketball_g08_c01.avi": 160,
    "Basketball/v_Basketball_g09_c01.avi": 200,   # in no split list: ignored
}


@pytest.fixture(scope="module")
def ucf_tree(tmp_path_factory, ffmpeg):
    """The official layout, two classes, classInd in non-alphabetical order, Windows line ends."""
    root = tmp_path_factory.mktemp("ucf")
    for rel, grey in UCF_VIDEOS.items():
        (root / "UCF-101" / rel).parent.mkdir(parents=True, exist_ok=True)
        ffmpeg("-f", "lavfi", "-i", f"color=c=0x{grey:02x}{grey:02x}{grey:02x}:s=320x240:r=25,noise=alls=4:allf=t", "-frames:v", 8,
               "-c:v", "mpeg4", "-q:v", 2, "-pix_fmt", "yuv420p", root / "UCF-101" / rel)
    (root / "UCF-101/Basketball/notes.txt").write_text("not a video")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 HandstandPushups\r\n2 Basketball\r\n")
    (lists / "trainlist01.txt").write_bytes(b"HandstandPushups/v_HandStandPushups_g08_c01.avi 1\r\n"
                                            b"Basketball/v_Basketball_g08_c01.avi 2\r\n"
                                            b"Basketball/v_Basketball_g10_c01.avi 2\r\n")  # missing on disk
    (lists / "testlist01.txt").write_bytes(b"HandstandPushups/v_HandStandPushups_g01_c01.avi\r\n"
                                           b"Basketball/v_Basketball_g01_c01.avi\r\n")
    (lists / "trainlist02.txt").write_bytes(b"HandstandPushups/v_HandStandPushups_g01_c01.avi 1\r\n"
                                            b"Basketball/v_Basketball_g01_c01.avi 2\r\n")
    (lists / "testlist02.txt").write_bytes(b"HandstandPushups/v_HandStandPushups_g08_c01.avi\r\n"
                                           b"basketball/v_basketball_g08_c01.avi\r\n")  # other letter case
    return root


def check_ucf_clips(store, manifest, prefix):
    for split in ("train", "test"):
        rows = manifest.query(f"split == '{split}'")
        means = store[f"{split}/clips"][:].reshape(len(rows), -1).mean(1)
        for source, mean in zip(rows["source"], means):
            assert abs(mean - UCF_VIDEOS[source.removeprefix(prefix)]) < TOLERANCE, source
        assert store[f"{split}/labels"][:].tolist() == rows["label"].tolist()


def test_ucf101_official_lists_give_splits_labels_and_rejections(ucf_tree, tmp_path):
    summary, store, manifest, rejected = build(params(ucf_tree), tmp_path / "out")
    assert store.attrs["format"] == "ucf101"  # detected
    assert store.attrs["class_names"] == ["HandstandPushups", "Basketball"]  # classInd order, not sorted
    rows = manifest.drop_duplicates("source")[["split", "source", "label", "class_name"]].values.tolist()
    assert rows == [["train", "UCF-101/Basketball/v_Basketball_g08_c01.avi", 1, "Basketball"],
                    ["train", "UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi", 0, "HandstandPushups"],
                    ["test", "UCF-101/Basketball/v_Basketball_g01_c01.avi", 1, "Basketball"],
                    ["test", "UCF-101/HandstandPushups/v_HandStandPushups_g01_c01.avi", 0, "HandstandPushups"]]
    assert summary.counts["train"]["clips"] == 4 and summary.counts["test"]["clips"] == 4
    check_ucf_clips(store, manifest, "UCF-101/")
    assert rejected[["source", "split", "reason"]].values.tolist() == [
        ["UCF-101/Basketball/v_Basketball_g10_c01.avi", "train", "missing"]]
    assert summary.counts["ignored"] == 2 and "2 files ignored" in str(summary)  # g09 and notes.txt


def test_ucf101_split_2_and_source_at_the_videos_folder(ucf_tree, tmp_path):
    summary, store, manifest, rejected = build(params(ucf_tree / "UCF-101", ucf_split=2), tmp_path / "out")
    assert store.attrs["format"] == "ucf101" and len(rejected) == 0
    assert manifest.drop_duplicates("source")[["split", "source", "label"]].values.tolist() == [
        ["train", "Basketball/v_Basketball_g01_c01.avi", 1],
        ["train", "HandstandPushups/v_HandStandPushups_g01_c01.avi", 0],
        ["test", "Basketball/v_Basketball_g08_c01.avi", 1],  # listed in other letter case
        ["test", "HandstandPushups/v_HandStandPushups_g08_c01.avi", 0]]
    check_ucf_clips(store, manifest, "")
    assert summary.counts["ignored"] == 2


def test_ucf101_bad_lists_name_the_key(ucf_tree, tmp_path):
    with pytest.raises(ParamsError, match="^data.ucf_split: 3: split list .*trainlist03.txt' not found"):
        build(params(ucf_tree, ucf_split=3), tmp_path / "out")
    with pytest.raises(ParamsError, match="^data.split_ratio: must be null for data.format ucf101"):
        build(params(ucf_tree, split_ratio=0.2), tmp_path / "out")
    with pytest.raises(ParamsError, match="^data.source: no ucfTrainTestlist/classInd.txt"):
        build(params(ucf_tree / "UCF-101/Basketball", format="ucf101"), tmp_path / "out")


# ------------------------------------------------------------------------------------------------
# Moving MNIST


def test_moving_mnist_npy_gives_rgb_clips_and_a_seeded_split(tmp_path):
    rng = np.random.default_rng(0)
    seqs = rng.integers(0, 256, (20, 10, 64, 64), dtype=np.uint8)  # (T, N, H, W) as mnist_test_seq.npy
    src = tmp_path / "mnist"
    src.mkdir()
    np.save(src / "mnist_test_seq.npy", seqs)
    np.save(src / "other.npy", np.zeros((3, 4), np.float32))
    (src / "README.txt").write_text("x")
    summary, store, manifest, rejected = build(params(src, resolution=64, sequence_length=8), tmp_path / "out")
    assert store.attrs["format"] == "moving_mnist"
    # split_ratio null -> 0.1: 9 train, 1 test sequences; 20 frames -> clips at 0 and 8
    assert summary.counts["train"] == {"videos": 9, "clips": 18} and summary.counts["test"] == {"videos": 1, "clips": 2}
    assert rejected[["source", "reason"]].values.tolist() == [["other.npy", "not a Moving-MNIST array"]]
    assert summary.counts["ignored"] == 1 and set(manifest["label"]) == {-1}
    for split in ("train", "test"):
        rows = manifest.query(f"split == '{split}'")
        clips = store[f"{split}/clips"][:]
        for clip, source, start in zip(clips, rows["source"], rows["start_frame"]):
            n = int(source.removeprefix("mnist_test_seq.npy#"))
            for c in range(3):
                np.testing.assert_array_equal(clip[..., c], seqs[start:start + 8, n])
    test_seqs = lambda m: set(m.query("split == 'test'")["source"])  # noqa: E731
    _, again_store, again, _ = build(params(src, resolution=64, sequence_length=8, num_workers=2),
                                     tmp_path / "again")
    assert again.equals(manifest)  # same seed: same split, whatever the worker count
    np.testing.assert_array_equal(again_store["test/clips"][:], store["test/clips"][:])
    _, _, m30, _ = build(params(src, resolution=64, sequence_length=16, split_ratio=0.3), tmp_path / "r30")
    _, _, m30b, _ = build(params(src, resolution=64, sequence_length=16, split_ratio=0.3, split_seed=1), tmp_path / "s1")
    assert len(test_seqs(m30)) == 3 and len(m30) == 10 and test_seqs(m30) != test_seqs(m30b)


# ------------------------------------------------------------------------------------------------
# Frame folders


def grey_png(path: Path, value: int, size=(33, 25), fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, format=fmt)


def test_frame_folders_in_natural_order_with_labels_and_rejections(tmp_path):
    src = tmp_path / "frames"
    for i in range(1, 13):  # lexical order would be 1, 10, 11, 12, 2, ...
        grey_png(src / f"train/cat/vid1/frame_{i}.png", 10 * i)
    (src / "train/cat/vid1/notes.txt").write_text("x")
    for i in range(4):
        grey_png(src / f"test/vid2/{i:03d}.jpg", 200)
    grey_png(src / "train/cat/vid3/frame_1.png", 50)
    (src / "train/cat/vid3/frame_2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    grey_png(src / "train/stray.png", 30)  # in no video folder
    summary, store, manifest, rejected = build(params(src), tmp_path / "out")
    assert store.attrs["format"] == "frames" and store.attrs["class_names"] == ["cat"]
    assert manifest.drop_duplicates("source")[["split", "source", "label", "width", "height"]].values.tolist() == [
        ["train", "train/cat/vid1", 0, 33, 25], ["test", "test/vid2", -1, 33, 25]]
    clips = store["train/clips"][:]
    assert clips.shape == (3, 4, 8, 8, 3)
    np.testing.assert_array_equal(clips.reshape(12, -1).max(1), 10 * np.arange(1, 13))  # frame i is 10 * i
    np.testing.assert_array_equal(clips.reshape(12, -1).min(1), 10 * np.arange(1, 13))
    assert abs(store["test/clips"][:].mean() - 200) < TOLERANCE
    reasons = {r.source: (r.reason, r.detail) for r in rejected.itertuples()}
    assert reasons["train/cat/vid3"][0] == "unreadable frame" and reasons["train/cat/vid3"][1].startswith("frame_2.png")
    assert reasons["train/cat/vid1/notes.txt"][0] == "not an image"
    assert reasons["train/stray.png"][0] == "frame outside a video folder" and len(reasons) == 3


def test_frames_are_scaled_exactly_like_videos(tmp_path, ffmpeg):
    """Odd-size random frames: the frame-folder reader equals decoding a lossless RGB video of them."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 25, 33, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"f{i}.png")
    (tmp_path / "raw.rgb").write_bytes(frames.tobytes())
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "33x25", "-r", 8, "-i", tmp_path / "raw.rgb",
           "-c:v", "ffv1", "-pix_fmt", "bgr0", tmp_path / "lossless.mkv")
    p = params(tmp_path, resolution=8)
    video = read_frame_folder(tmp_path, p)
    np.testing.assert_array_equal(video.frames, decode_video(tmp_path / "lossless.mkv", 8))
    assert (video.width, video.height) == (33, 25)
    # frames of different sizes are each scaled by the same rule
    other = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    mixed = scale_frames([frames[0], other, frames[1]], 8)
    np.testing.assert_array_equal(mixed, np.concatenate([video.frames[:1], scale_frames(other[None], 8),
                                                         video.frames[1:2]]))


def test_natural_key():
    names = ["frame_10.png", "Frame_2.png", "frame_1.png", "frame_001b.png", "frame_02.png"]
    assert sorted(names, key=natural_key) == ["frame_1.png", "frame_001b.png", "Frame_2.png", "frame_02.png",
                                              "frame_10.png"]


# ------------------------------------------------------------------------------------------------
# data.format auto


def touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_auto_detection_picks_each_layout(tmp_path):
    touch(tmp_path / "ucf/UCF-101/A/v_A_g01_c01.avi")
    touch(tmp_path / "ucf/ucfTrainTestlist/classInd.txt")
    touch(tmp_path / "bair/softmotion30_44k/train/traj_0_to_255.tfrecords")
    touch(tmp_path / "bair2/train/traj_0_to_255.tfrecords")
    touch(tmp_path / "mnist/mnist_test_seq.npy")
    touch(tmp_path / "frames/train/a/v1/0001.png")
    touch(tmp_path / "frames/test/v2/0001.JPG")
    touch(tmp_path / "videos/train/a/x.mp4")
    touch(tmp_path / "mixed/train/x.mp4")
    touch(tmp_path / "mixed/train/cover.jpg")
    touch(tmp_path / "no_lists/UCF-101/A/v_A_g01_c01.avi")
    expected = {"ucf": "ucf101", "ucf/UCF-101": "ucf101", "bair": "bair", "bair/softmotion30_44k": "bair",
                "bair2": "bair", "mnist": "moving_mnist", "frames": "frames", "videos": "videos",
                "mixed": "videos", "no_lists": "videos"}
    assert {name: detect_format(tmp_path / name) for name in expected} == expected


def test_format_key_forces_an_adapter(tmp_path):
    touch(tmp_path / "mnist/mnist_test_seq.npy")
    with pytest.raises(ParamsError, match="^data.source: no folders of image files"):
        build(params(tmp_path / "mnist", format="frames", split_ratio=0.5), tmp_path / "out")
    with pytest.raises(ParamsError, match="^data.fps: must be null for data.format moving_mnist"):
        build(params(tmp_path / "mnist", format="moving_mnist", fps=10.0), tmp_path / "out")
