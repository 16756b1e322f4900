"""TFRecord files and tf.train.Example records, read without TensorFlow.

TFRecord framing, per record (all integers little-endian):

    uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

masked_crc(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2**32), CRC32C being the Castagnoli CRC
(reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF). Both CRCs are checked:
a mismatch, a truncated record or trailing bytes raise TFRecordError naming the file and record index.

CRC32C comes from google-crc32c's C extension when it is installed (it is: zarr depends on it), otherwise
from the table-driven numpy implementation below (about 50 MB/s), which the tests check against the
published test vectors either way.

tf.train.Example is decoded by a small reader of the protobuf wire format:

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      (map entry: string key = 1; Feature value = 2)
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1; }  (packed or not)
    Int64List { repeated int64 value = 1; }
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

# ------------------------------------------------------------------------------------------------
# CRC32C

_POLY = 0x82F63B78  # Castagnoli, bit-reflected
_MASK_DELTA = 0xA282EAD8


def _make_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _make_table()
_TABLE_LIST = _TABLE.tolist()
_BLOCK = 1024          # bytes per block of the vectorised path
_SHIFT_TABLES: list[list[int]] | None = None


def _update(state: int, data) -> int:
    """The raw reflected CRC register after `data` (no initial or final inversion), one byte at a time."""
    table = _TABLE_LIST
    for byte in data:
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


def _shift_tables() -> list[list[int]]:
    """The register map s -> _update(s, _BLOCK zero bytes), which is linear over GF(2), as four byte tables:
    shift(s) = T0[s & 255] ^ T1[(s >> 8) & 255] ^ T2[(s >> 16) & 255] ^ T3[s >> 24]."""
    global _SHIFT_TABLES
    if _SHIFT_TABLES is None:
        states = np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]
        for _ in range(_BLOCK):
            states = _TABLE[states & 0xFF] ^ (states >> 8)
        _SHIFT_TABLES = states.tolist()
    return _SHIFT_TABLES


def crc32c_numpy(data: bytes | bytearray | memoryview) -> int:
    """CRC32C in numpy. The register update is linear, so update(s, A + B) = shift_len(B)(update(s, A)) ^
    update(0, B): the CRCs of all _BLOCK-byte blocks are computed side by side (one vectorised table step
    per byte position), then chained with the precomputed shift tables; the tail goes byte by byte."""
    buf = np.frombuffer(memoryview(data).cast("B"), np.uint8)
    n_blocks = len(buf) // _BLOCK
    state = 0xFFFFFFFF
    if n_blocks >= 4:
        columns = np.ascontiguousarray(buf[:n_blocks * _BLOCK].reshape(n_blocks, _BLOCK).T)
        block_crcs = np.zeros(n_blocks, np.uint32)
        for column in columns:
            block_crcs = _TABLE[(block_crcs ^ column) & 0xFF] ^ (block_crcs >> 8)
        t0, t1, t2, t3 = _shift_tables()
        for crc in block_crcs.tolist():
            state = t0[state & 0xFF] ^ t1[(state >> 8) & 0xFF] ^ t2[(state >> 16) & 0xFF] ^ t3[state >> 24] ^ crc
        buf = buf[n_blocks * _BLOCK:]
    return _update(state, buf.tolist()) ^ 0xFFFFFFFF


try:
    import google_crc32c
    _fast_crc32c = google_crc32c.value if google_crc32c.implementation == "c" else None
except ImportError:  # pragma: no cover - zarr depends on google-crc32c
    _fast_crc32c = None


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32C (Castagnoli) of `data`, e.g. crc32c(b"123456789") == 0xE3069283."""
    if _fast_crc32c is not None:
        return _fast_crc32c(bytes(data))
    return crc32c_numpy(data)


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The CRC as TFRecord stores it."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------
# TFRecord framing


class TFRecordError(ValueError):
    """A TFRecord file that is not intact. `reason` is short (to group by), `record` the 0-based index."""

    def __init__(self, path, record: int, reason: str, detail: str = ""):
        self.path, self.record, self.reason, self.detail = str(path), record, reason, detail
        super().__init__(f"{path}: record {record}: {reason}" + (f" ({detail})" if detail else ""))


def _read_exactly(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    while len(data) < n:
        more = fh.read(n - len(data))
        if not more:
            break
        data += more
    return data


def read_tfrecords(path: str | Path, check_crc: bool = True) -> Iterator[bytes]:
    """The records of a TFRecord file, in order, each checked against both of its CRCs."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        index, offset = 0, 0
        while True:
            header = _read_exactly(fh, 12)
            if not header:
                return
            if len(header) < 12:
                raise TFRecordError(path, index, "truncated", f"{len(header)} bytes of a 12-byte header at byte {offset}")
            length_bytes, stored = header[:8], struct.unpack("<I", header[8:])[0]
            if check_crc and masked_crc32c(length_bytes) != stored:
                raise TFRecordError(path, index, "length CRC mismatch",
                                    f"stored 0x{stored:08x}, computed 0x{masked_crc32c(length_bytes):08x}, "
                                    f"at byte {offset}")
            (length,) = struct.unpack("<Q", length_bytes)
            if offset + 12 + length + 4 > size:
                raise TFRecordError(path, index, "truncated",
                                    f"record of {length} bytes at byte {offset} runs past the end ({size} bytes)")
            data = _read_exactly(fh, length)
            footer = _read_exactly(fh, 4)
            if len(data) < length or len(footer) < 4:
                raise TFRecordError(path, index, "truncated", f"file ended inside the record at byte {offset}")
            stored = struct.unpack("<I", footer)[0]
            if check_crc:
                computed = masked_crc32c(data)
                if computed != stored:
                    raise TFRecordError(path, index, "data CRC mismatch",
                                        f"stored 0x{stored:08x}, computed 0x{computed:08x}, "
                                        f"{length} bytes at byte {offset + 12}")
            yield data
            index += 1
            offset += 12 + length + 4


# ------------------------------------------------------------------------------------------------
# Protobuf wire format: just enough for tf.train.Example

class ProtobufError(ValueError):
    """Bytes that are not a well-formed message of the expected type."""


_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of every field: ints for VARINT/I64/I32, a memoryview for LEN."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ProtobufError(f"field {number}: length {n} runs past the end of the message")
            value, pos = buf[pos:pos + n], pos + n
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if pos + width > len(buf):
                raise ProtobufError(f"field {number}: truncated fixed-width value")
            value = int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        else:
            raise ProtobufError(f"field {number}: unsupported wire type {wire}")
        yield number, wire, value


def _floats(buf: memoryview) -> list[float]:
    out: list[float] = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == _LEN:           # packed (what TensorFlow writes)
            if len(value) % 4:
                raise ProtobufError("packed float list whose length is not a multiple of 4")
            out.extend(np.frombuffer(value, "<f4").tolist())
        elif wire == _I32:
            out.append(struct.unpack("<f", value.to_bytes(4, "little"))[0])
        else:
            raise ProtobufError(f"FloatList.value with wire type {wire}")
    return out


def _int64s(buf: memoryview) -> list[int]:
    def signed(v: int) -> int:
        v &= (1 << 64) - 1
        return v - (1 << 64) if v >> 63 else v

    out: list[int] = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == _LEN:           # packed
            pos = 0
            while pos < len(value):
                v, pos = _varint(value, pos)
                out.append(signed(v))
        elif wire == _VARINT:
            out.append(signed(value))
        else:
            raise ProtobufError(f"Int64List.value with wire type {wire}")
    return out


def _feature(buf: memoryview) -> list[bytes] | np.ndarray:
    """One Feature: list of bytes, float32 array or int64 array (the last kind wins, as in protobuf)."""
    result: list[bytes] | np.ndarray = []
    for number, wire, value in _fields(buf):
        if wire != _LEN:
            continue
        if number == 1:
            result = [bytes(v) for n, w, v in _fields(value) if n == 1 and w == _LEN]
        elif number == 2:
            result = np.asarray(_floats(value), np.float32)
        elif number == 3:
            result = np.asarray(_int64s(value), np.int64)
    return result


def parse_example(data: bytes | memoryview) -> dict[str, list[bytes] | np.ndarray]:
    """A serialized tf.train.Example -> {feature name: list of bytes | float32 array | int64 array}."""
    features: dict[str, list[bytes] | np.ndarray] = {}
    for number, wire, example_field in _fields(memoryview(data)):
        if number != 1 or wire != _LEN:
            continue  # unknown fields are skipped, as protobuf does
        for n, w, entry in _fields(example_field):
            if n != 1 or w != _LEN:
                continue
            key, value = None, memoryview(b"")
            for en, ew, ev in _fields(entry):
                if en == 1 and ew == _LEN:
                    try:
                        key = bytes(ev).decode("utf-8")
                    except UnicodeDecodeError:
                        raise ProtobufError("feature name is not UTF-8") from None
                elif en == 2 and ew == _LEN:
                    value = ev
            if key is None:
                raise ProtobufError("feature map entry without a key")
            features[key] = _feature(value)
    return features
