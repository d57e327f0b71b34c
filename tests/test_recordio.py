"""RecordIO framing, IRHeader packing, `.idx` parsing and index rebuilding."""

import struct

import numpy as np
import pytest

from mfn_tf.data.errors import DatasetError
from mfn_tf.data.recordio import (
    IR_HEADER_SIZE,
    RECORDIO_MAGIC,
    IRHeader,
    RecordIOReader,
    RecordIOWriter,
    encode_frames,
    pack_record,
    read_index,
    rebuild_index,
    scan_records,
    unpack_record,
)

MAGIC = struct.pack("<I", RECORDIO_MAGIC)


def lrecord(flag, length):
    return struct.pack("<I", (flag << 29) | length)


def test_frame_whole_record_padded():
    assert encode_frames(b"abcde") == MAGIC + lrecord(0, 5) + b"abcde\0\0\0"


def test_frame_empty_record():
    assert encode_frames(b"") == MAGIC + lrecord(0, 0)


def test_frame_splits_at_aligned_magic():
    payload = b"abcd" + MAGIC + b"efgh" + MAGIC + b"ij"
    expected = (
        MAGIC + lrecord(1, 4) + b"abcd"
        + MAGIC + lrecord(2, 4) + b"efgh"
        + MAGIC + lrecord(3, 2) + b"ij\0\0"
    )
    assert encode_frames(payload) == expected


def test_frame_keeps_unaligned_magic():
    payload = b"ab" + MAGIC + b"cd"
    assert encode_frames(payload) == MAGIC + lrecord(0, 8) + payload


def test_frame_magic_at_start_and_end():
    payload = MAGIC + b"abcd" + MAGIC
    expected = (
        MAGIC + lrecord(1, 0)
        + MAGIC + lrecord(2, 4) + b"abcd"
        + MAGIC + lrecord(3, 0)
    )
    assert encode_frames(payload) == expected


PAYLOADS = [
    b"",
    b"x",
    b"abcd" * 3,
    MAGIC,
    MAGIC * 3,
    b"ab" + MAGIC + b"cd" + MAGIC + b"efgh" + MAGIC,
    bytes(range(256)) * 5,
]


def test_writer_reader_round_trip(tmp_path):
    rec, idx = tmp_path / "a.rec", tmp_path / "a.idx"
    with RecordIOWriter(rec, idx) as writer:
        for key, payload in enumerate(PAYLOADS):
            writer.write(key * 10, payload)
    with RecordIOReader(rec, idx) as reader:
        assert list(reader.keys) == [key * 10 for key in range(len(PAYLOADS))]
        for key, payload in enumerate(PAYLOADS):
            assert reader.read(key * 10) == payload
    assert [payload for _, payload in scan_records(rec)] == PAYLOADS


def test_index_lines_match_offsets(tmp_path):
    rec, idx = tmp_path / "a.rec", tmp_path / "a.idx"
    with RecordIOWriter(rec, idx) as writer:
        writer.write(0, b"abc")
        writer.write(1, b"defgh")
    assert idx.read_text() == "0\t0\n1\t12\n"


def test_writer_rejects_repeated_key(tmp_path):
    with RecordIOWriter(tmp_path / "a.rec", tmp_path / "a.idx") as writer:
        writer.write(3, b"a")
        with pytest.raises(ValueError, match="key 3"):
            writer.write(3, b"b")


def test_pack_scalar_label():
    record = pack_record(IRHeader(0, 7.0, 12, 0), b"jpeg")
    assert record == struct.pack("<IfQQ", 0, 7.0, 12, 0) + b"jpeg"
    header, payload = unpack_record(record)
    assert header == IRHeader(0, 7.0, 12, 0)
    assert payload == b"jpeg"


def test_pack_array_label():
    record = pack_record(IRHeader(0, [3, 9], 0, 0), b"")
    assert record[:IR_HEADER_SIZE] == struct.pack("<IfQQ", 2, 0.0, 0, 0)
    header, payload = unpack_record(record)
    assert header.flag == 2
    np.testing.assert_array_equal(header.label, [3.0, 9.0])
    assert header.label.dtype == np.float32
    assert payload == b""


def test_unpack_rejects_short_record():
    with pytest.raises(ValueError, match="shorter"):
        unpack_record(b"\0" * 10)
    with pytest.raises(ValueError, match="label values"):
        unpack_record(struct.pack("<IfQQ", 4, 0.0, 0, 0) + b"\0" * 8)


def test_read_index_parses_keys(tmp_path):
    idx = tmp_path / "a.idx"
    idx.write_text("5\t0\n2\t16\n9\t40\n")
    index = read_index(idx)
    assert list(index.keys) == [5, 2, 9]
    assert index.offset(2) == 16
    assert index.offset(4) is None
    assert 9 in index


@pytest.mark.parametrize(
    "text, message",
    [
        ("0\t0\n1\t1", "truncated"),
        ("0\t0\n1 16\n", ":2: expected"),
        ("0\t0\nx\t16\n", ":2: expected"),
        ("0\t0\n1\t-4\n", ":2: expected"),
        ("0\t0\n0\t16\n", "key 0 appears more than once"),
    ],
)
def test_read_index_rejects_malformed(tmp_path, text, message):
    idx = tmp_path / "a.idx"
    idx.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_index(idx)


def test_rebuild_index_matches_writer(tmp_path):
    rec, idx = tmp_path / "a.rec", tmp_path / "a.idx"
    with RecordIOWriter(rec, idx) as writer:
        for key, payload in enumerate(PAYLOADS):
            writer.write(key, payload)
    rebuilt = tmp_path / "rebuilt.idx"
    assert rebuild_index(rec, rebuilt, progress=False) == len(PAYLOADS)
    assert rebuilt.read_text() == idx.read_text()


def test_read_prefix(tmp_path):
    rec, idx = tmp_path / "a.rec", tmp_path / "a.idx"
    with RecordIOWriter(rec, idx) as writer:
        for key, payload in enumerate(PAYLOADS):
            writer.write(key, payload)
    with RecordIOReader(rec, idx) as reader:
        for key, payload in enumerate(PAYLOADS):
            assert reader.read_prefix(key, 6) == payload[:6], f"record {key}"
