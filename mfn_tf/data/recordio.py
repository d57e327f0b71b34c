"""MXNet RecordIO (`.rec` + `.idx`) read and written in pure Python.

The container format is dmlc-core's RecordIO. Every record starts with the
magic word 0xced7230a and a uint32 `lrecord` (little-endian), whose upper
3 bits are a continuation flag and lower 29 bits the length of the data
that follows, zero-padded to a multiple of 4 bytes.

The writer splits a record wherever the magic word occurs at a
4-byte-aligned offset of the payload, so that the magic word only ever
marks a record start. The parts carry flag 1 (first), 2 (middle) and 3
(last), and a whole record has flag 0. The reader puts the magic word back
between the parts.

The `.idx` file has one text line `key<TAB>byte offset` per record, as
MXNet's `MXIndexedRecordIO` writes it.

On top of that, MXNet image records (`mx.recordio.pack`) start with an
`IRHeader`, struct `<IfQQ` (flag, label, id, id2). When `flag > 0` the
label is an array of `flag` float32 values that follows the header, and
the header's own label field is 0.

MXNet is not needed: its numpy pin (< 1.24) conflicts with TensorFlow's.
"""

import logging
import numbers
import os
import re
import struct
from collections import namedtuple
from pathlib import Path

import numpy as np

from mfn_tf.data.errors import DatasetError

logger = logging.getLogger(__name__)

RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_FRAME = struct.Struct("<II")  # magic, lrecord
_LENGTH_BITS = 29
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1
MAX_RECORD_BYTES = _LENGTH_MASK

# Continuation flags of a record part (dmlc-core RecordIOWriter).
FLAG_WHOLE = 0
FLAG_FIRST = 1
FLAG_MIDDLE = 2
FLAG_LAST = 3

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = """MXNet image-record header.

`label` is a float, or a float32 array when `flag > 0` (then `flag` is its
length).
"""
_IR_STRUCT = struct.Struct("<IfQQ")
IR_HEADER_SIZE = _IR_STRUCT.size


def _align4(length):
    return (length + 3) & ~3


def pack_record(header, payload):
    """Pack an `IRHeader` and payload bytes into an image record.

    A numeric label is stored in the header with flag 0. A sequence label
    is stored as float32 values after the header, with flag set to their
    count, as `mx.recordio.pack` does.
    """
    flag, label, record_id, record_id2 = header
    if isinstance(label, numbers.Number):
        return _IR_STRUCT.pack(0, float(label), record_id, record_id2) + bytes(payload)
    label = np.asarray(label, dtype=np.float32).ravel()
    if label.size == 0:
        raise ValueError("an array label needs at least one value; use a number instead")
    head = _IR_STRUCT.pack(label.size, 0.0, record_id, record_id2)
    return head + label.astype("<f4").tobytes() + bytes(payload)


def unpack_record(record):
    """Split an image record into its `IRHeader` and payload bytes.

    Raises:
        ValueError: the record is shorter than its header and label.
    """
    if len(record) < IR_HEADER_SIZE:
        raise ValueError(
            f"record of {len(record)} bytes is shorter than the "
            f"{IR_HEADER_SIZE}-byte IRHeader"
        )
    header = IRHeader(*_IR_STRUCT.unpack_from(record, 0))
    offset = IR_HEADER_SIZE
    if header.flag > 0:
        end = offset + 4 * header.flag
        if len(record) < end:
            raise ValueError(
                f"IRHeader announces {header.flag} label values but the "
                f"record has only {len(record) - offset} bytes after it"
            )
        label = np.frombuffer(record, dtype="<f4", count=header.flag, offset=offset)
        header = header._replace(label=label.astype(np.float32))
        offset = end
    return header, bytes(record[offset:])


def encode_frames(payload):
    """Return a payload framed as dmlc RecordIO, split at aligned magic words."""
    payload = bytes(payload)
    length = len(payload)
    if length > MAX_RECORD_BYTES:
        raise ValueError(
            f"record too large: RecordIO allows at most {MAX_RECORD_BYTES} "
            f"bytes, got {length}"
        )
    parts = []
    start = 0
    # Only 4-byte-aligned occurrences split the record: the reader scans
    # for the magic word at aligned positions only.
    position = payload.find(_MAGIC_BYTES)
    while position != -1:
        if position % 4 == 0:
            flag = FLAG_FIRST if start == 0 else FLAG_MIDDLE
            parts.append(_FRAME.pack(RECORDIO_MAGIC, (flag << _LENGTH_BITS) | (position - start)))
            parts.append(payload[start:position])
            start = position + 4
            position = payload.find(_MAGIC_BYTES, start)
        else:
            position = payload.find(_MAGIC_BYTES, position + 1)
    flag = FLAG_LAST if start > 0 else FLAG_WHOLE
    parts.append(_FRAME.pack(RECORDIO_MAGIC, (flag << _LENGTH_BITS) | (length - start)))
    parts.append(payload[start:])
    parts.append(b"\0" * (_align4(length) - length))
    return b"".join(parts)


def read_frames(file, offset, file_size, rec_path, key):
    """Read the record that starts at `offset` of an open binary file.

    Returns:
        `(payload, end)`: the reassembled payload and the byte offset just
        past the record's last part.

    Raises:
        DatasetError: no magic word at `offset`, a part runs past the end
            of the file, or the continuation flags are out of order.
    """
    pieces = []
    position = offset
    while True:
        frame = os.pread(file.fileno(), _FRAME.size, position)
        if len(frame) < _FRAME.size:
            raise DatasetError(
                f"{rec_path}: record {key} at byte {position} runs past the end "
                f"of the file ({file_size} bytes): the .rec is truncated"
                + _REBUILD_HINT
            )
        magic, lrecord = _FRAME.unpack(frame)
        if magic != RECORDIO_MAGIC:
            raise DatasetError(
                f"{rec_path}: record {key}: no RecordIO magic word at byte "
                f"{position} (found 0x{magic:08x}); the .idx does not match "
                "the .rec, or the .rec is corrupt" + _REBUILD_HINT
            )
        flag = lrecord >> _LENGTH_BITS
        length = lrecord & _LENGTH_MASK
        expected = (FLAG_WHOLE, FLAG_FIRST) if not pieces else (FLAG_MIDDLE, FLAG_LAST)
        if flag not in expected:
            raise DatasetError(
                f"{rec_path}: record {key}: part at byte {position} has "
                f"continuation flag {flag}, expected one of {expected}; the "
                ".rec is corrupt or the .idx points into the middle of a record"
            )
        data_start = position + _FRAME.size
        data_end = data_start + _align4(length)
        if data_end > file_size:
            raise DatasetError(
                f"{rec_path}: record {key} at byte {position} needs {length} "
                f"bytes but the file ends at byte {file_size}: the .rec is truncated"
                + _REBUILD_HINT
            )
        pieces.append(os.pread(file.fileno(), length, data_start))
        position = data_end
        if flag in (FLAG_WHOLE, FLAG_LAST):
            return _MAGIC_BYTES.join(pieces), position


_REBUILD_HINT = (
    ". Re-create the dataset (`python cli.py data pack-rec`), or rebuild the "
    "index from the .rec with `python cli.py data reindex DIR`."
)


class RecordIndex:
    """The keys of a `.idx` file and their byte offsets, in file order.

    Arrays instead of a dict, because an index of millions of records
    (MS1M has 5.8M) would otherwise take gigabytes of Python objects.
    """

    def __init__(self, keys, offsets):
        self.keys = np.asarray(keys, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._order = np.argsort(self.keys, kind="stable")
        self._sorted_keys = self.keys[self._order]

    def __len__(self):
        return len(self.keys)

    def position(self, key):
        """Return the line position of `key`, or -1 when it is absent."""
        found = int(np.searchsorted(self._sorted_keys, key))
        if found < len(self._sorted_keys) and self._sorted_keys[found] == key:
            return int(self._order[found])
        return -1

    def __contains__(self, key):
        return self.position(key) >= 0

    def offset(self, key):
        """Return the byte offset of `key`, or None when it is absent."""
        position = self.position(key)
        return None if position < 0 else int(self.offsets[position])


_INDEX_PATTERN = re.compile(r"(?:-?[0-9]+\t[0-9]+\r?\n)*")


def read_index(idx_path):
    """Parse a `.idx` file (lines `key<TAB>offset`) into a `RecordIndex`.

    Keys are ints, as MXNet's `MXIndexedRecordIO` writes them by default.

    Raises:
        DatasetError: the file is missing, a line is malformed, a key
            repeats, or the last line is cut off (a truncated file).
    """
    idx_path = Path(idx_path)
    reindex = f"`python cli.py data reindex {idx_path.parent} --overwrite`"
    if not idx_path.is_file():
        raise DatasetError(
            f"index file {idx_path} not found. Rebuild it from the .rec with "
            f"`python cli.py data reindex {idx_path.parent}`."
        )
    text = idx_path.read_bytes().decode("ascii", errors="replace")
    if text and not text.endswith("\n"):
        raise DatasetError(
            f"{idx_path}: the last line has no line break, so the file is "
            f"truncated. Rebuild it with {reindex}."
        )
    if not _INDEX_PATTERN.fullmatch(text):
        _raise_first_bad_line(idx_path, text.splitlines(), reindex)
    try:
        table = np.array(text.split(), dtype=np.int64).reshape(-1, 2)
    except OverflowError:
        raise DatasetError(f"{idx_path}: a key or offset does not fit in 64 bits") from None
    keys, offsets = table[:, 0], table[:, 1]
    unique, counts = np.unique(keys, return_counts=True)
    if len(unique) != len(keys):
        duplicate = int(unique[np.argmax(counts > 1)])
        line_number = int(np.argmax(keys == duplicate)) + 1
        raise DatasetError(
            f"{idx_path}: key {duplicate} appears more than once (first on "
            f"line {line_number}). Rebuild the index with {reindex}."
        )
    return RecordIndex(keys, offsets)


def _raise_first_bad_line(idx_path, lines, reindex):
    for line_number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        try:
            if len(fields) != 2 or not fields[1].strip().isdigit():
                raise ValueError
            int(fields[0])
        except ValueError:
            raise DatasetError(
                f"{idx_path}:{line_number}: expected `key<TAB>offset` with "
                f"integers, got {line[:60]!r}. Rebuild the index with {reindex}."
            ) from None
    raise DatasetError(f"{idx_path}: malformed index. Rebuild it with {reindex}.")


class RecordIOReader:
    """Random access to the records of a `.rec` through its `.idx`.

    Reads use `os.pread`, so one reader may serve several threads.
    """

    def __init__(self, rec_path, idx_path):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path)
        if not self.rec_path.is_file():
            raise DatasetError(f"RecordIO file {self.rec_path} not found")
        self.index = read_index(self.idx_path)
        self._file = open(self.rec_path, "rb")
        self.file_size = os.fstat(self._file.fileno()).st_size
        self._check_offsets()

    def _check_offsets(self):
        offsets = self.index.offsets
        bad = np.flatnonzero((offsets >= self.file_size) | (offsets % 4 != 0))
        if len(bad):
            key = int(self.index.keys[bad[0]])
            raise DatasetError(
                f"{self.idx_path}: key {key} points at byte {int(offsets[bad[0]])}, "
                f"which is not a record start in {self.rec_path} "
                f"({self.file_size} bytes)" + _REBUILD_HINT
            )

    @property
    def keys(self):
        """Record keys in `.idx` order (an int64 array)."""
        return self.index.keys

    def __len__(self):
        return len(self.index)

    def __contains__(self, key):
        return key in self.index

    def read(self, key):
        """Return the payload of the record with `key`."""
        return self.read_with_end(key)[0]

    def read_with_end(self, key):
        """Return the payload of record `key` and the byte offset past it."""
        offset = self.index.offset(key)
        if offset is None:
            raise DatasetError(f"{self.idx_path}: no record with key {key}")
        return read_frames(self._file, offset, self.file_size, self.rec_path, key)

    def read_prefix(self, key, size):
        """Return at least the first `size` bytes of record `key` (fewer
        only if the record is shorter), without reading the rest of a
        whole record."""
        offset = self.index.offset(key)
        if offset is None:
            raise DatasetError(f"{self.idx_path}: no record with key {key}")
        frame = os.pread(self._file.fileno(), _FRAME.size + size, offset)
        if len(frame) >= _FRAME.size:
            magic, lrecord = _FRAME.unpack_from(frame)
            length = lrecord & _LENGTH_MASK
            if magic == RECORDIO_MAGIC and lrecord >> _LENGTH_BITS == FLAG_WHOLE:
                if offset + _FRAME.size + _align4(length) <= self.file_size:
                    return frame[_FRAME.size : _FRAME.size + min(size, length)]
        # A split, corrupt or truncated record: read_frames reassembles it
        # or raises the matching error.
        return self.read(key)[:size]

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def scan_records(rec_path):
    """Yield `(offset, payload)` for every record of a `.rec`, in file order.

    This walks the file without an index, for rebuilding a lost `.idx`.
    """
    rec_path = Path(rec_path)
    with open(rec_path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        offset = 0
        position = 0
        while offset < size:
            payload, end = read_frames(file, offset, size, rec_path, f"#{position}")
            yield offset, payload
            offset = end
            position += 1


class RecordIOWriter:
    """Sequential writer of a `.rec` and its `.idx`, like MXNet's
    `MXIndexedRecordIO(idx, rec, "w")`.

    The files are written under the given paths as they are. Callers that
    must not leave half-written files behind write to temporary names and
    rename them when `close()` returns (see `mfn_tf.data.packing`).
    """

    def __init__(self, rec_path, idx_path):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path)
        self._rec = open(self.rec_path, "wb")
        self._idx = open(self.idx_path, "w", encoding="ascii", newline="\n")
        self._keys = set()
        self.position = 0

    def write(self, key, payload):
        """Append a record with an int `key` and return its byte offset."""
        key = int(key)
        if key in self._keys:
            raise ValueError(f"key {key} was already written to {self.idx_path}")
        frames = encode_frames(payload)
        offset = self.position
        self._rec.write(frames)
        self._idx.write(f"{key}\t{offset}\n")
        self._keys.add(key)
        self.position += len(frames)
        return offset

    def close(self):
        self._rec.close()
        self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def rebuild_index(rec_path, idx_path, progress=True):
    """Write a `.idx` for a `.rec` by walking its records.

    Keys are assigned 0, 1, 2, ... in file order, which is the layout of
    insightface's datasets (MXNet allows other keys; those are lost).
    The index is written under a temporary name and renamed when complete.

    Returns:
        The number of records indexed.
    """
    from tqdm import tqdm

    rec_path, idx_path = Path(rec_path), Path(idx_path)
    if not rec_path.is_file():
        raise DatasetError(f"RecordIO file {rec_path} not found")
    partial = idx_path.with_name(idx_path.name + ".partial")
    count = 0
    try:
        with open(partial, "w", encoding="ascii", newline="\n") as index_file, tqdm(
            total=rec_path.stat().st_size, unit="B", unit_scale=True,
            desc=f"indexing {rec_path.name}", disable=not progress,
        ) as bar:
            last = 0
            for offset, _ in scan_records(rec_path):
                index_file.write(f"{count}\t{offset}\n")
                count += 1
                bar.update(offset - last)
                last = offset
            bar.update(bar.total - last)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(idx_path)
    return count
