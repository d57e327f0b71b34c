"""RecordIO compatibility with MXNet 1.9.1 itself, in its own environment.

MXNet writes a `.rec` in insightface's layout (header record, images,
identity records), and the project must produce the same bytes and read
it back; MXNet must read back what the project writes. One payload contains
the RecordIO magic word at 4-byte-aligned offsets, which makes the writer
split the record into parts.
"""

import io
import pickle
import struct
import subprocess
import textwrap

import numpy as np
import pytest
from PIL import Image

from mfn_tf.data.insightface_dataset import open_insightface_dataset
from mfn_tf.data.recordio import (
    IR_HEADER_SIZE,
    RECORDIO_MAGIC,
    IRHeader,
    RecordIOReader,
    RecordIOWriter,
    pack_record,
    unpack_record,
)

pytestmark = pytest.mark.mxnet

MAGIC = struct.pack("<I", RECORDIO_MAGIC)

# Runs in the MXNet environment: writes `inputs` with MXNet in
# insightface's layout, and reads every record of the project's file.
MXNET_SCRIPT = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    import mxnet as mx

    work = sys.argv[1]
    with open(work + "/inputs.pkl", "rb") as f:
        records = pickle.load(f)

    writer = mx.recordio.MXIndexedRecordIO(work + "/mxnet.idx", work + "/mxnet.rec", "w")
    for key, (flag, label, record_id, record_id2, payload) in enumerate(records):
        header = mx.recordio.IRHeader(flag, label, record_id, record_id2)
        writer.write_idx(key, mx.recordio.pack(header, payload))
    writer.close()

    reader = mx.recordio.MXIndexedRecordIO(work + "/project.idx", work + "/project.rec", "r")
    read_back = []
    for key in reader.keys:
        header, payload = mx.recordio.unpack(reader.read_idx(key))
        label = header.label
        label = [float(v) for v in label] if isinstance(label, np.ndarray) else float(label)
        read_back.append((key, header.flag, label, header.id, header.id2, payload))
    header0, _ = mx.recordio.unpack(reader.read_idx(0))
    # insightface's parsing of record 0: the image and identity key ranges.
    first, end = int(header0.label[0]), int(header0.label[1])
    reader.close()
    with open(work + "/read_back.pkl", "wb") as f:
        pickle.dump({"records": read_back, "header0": (first, end)}, f, protocol=4)
    """
)


def jpeg(colour, comment=None):
    buffer = io.BytesIO()
    Image.new("RGB", (112, 112), colour).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    if comment is not None:
        # A COM segment right after SOI. The IRHeader is 24 bytes, so the
        # comment starts at record offset 30 and comment[2:6] is aligned.
        segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
        data = data[:2] + segment + data[2:]
    return data


def insightface_records():
    """Records as insightface lays them out: 3 classes with 2, 1, 2 images."""
    magic_comment = b"ab" + MAGIC + b"cdef" + MAGIC + MAGIC + b"gh"
    images = [
        (0, jpeg((200, 30, 30), magic_comment)),
        (0, jpeg((30, 200, 30))),
        (1, jpeg((30, 30, 200))),
        (2, jpeg((90, 90, 90))),
        (2, jpeg((10, 10, 10), MAGIC * 4)),
    ]
    first_identity = len(images) + 1
    ranges = [(1, 3), (3, 4), (4, 6)]
    end = first_identity + len(ranges)
    records = [(0, [float(first_identity), float(end)], 0, 0, b"")]
    for key, (label, data) in enumerate(images, start=1):
        # The last image carries an array label, as some insightface sets do.
        value = [float(label), 5.0] if key == len(images) else float(label)
        records.append((0, value, key, 0, data))
    for label, (start, stop) in enumerate(ranges):
        records.append((0, [float(start), float(stop)], first_identity + label, 0, b""))
    return records, images, ranges


def write_project_rec(records, rec, idx):
    with RecordIOWriter(rec, idx) as writer:
        for key, (flag, label, record_id, record_id2, payload) in enumerate(records):
            writer.write(key, pack_record(IRHeader(flag, label, record_id, record_id2), payload))


@pytest.fixture(scope="module")
def exchanged(tmp_path_factory, mxnet_python):
    """Run MXNet once: it writes its `.rec` and reads the project's."""
    work = tmp_path_factory.mktemp("mxnet_recordio")
    records, images, ranges = insightface_records()
    with open(work / "inputs.pkl", "wb") as f:
        pickle.dump(records, f, protocol=4)
    write_project_rec(records, work / "project.rec", work / "project.idx")
    result = subprocess.run(
        [mxnet_python, "-c", MXNET_SCRIPT, str(work)], capture_output=True, text=True
    )
    assert result.returncode == 0, f"MXNet script failed:\n{result.stderr}"
    with open(work / "read_back.pkl", "rb") as f:
        read_back = pickle.load(f)
    return work, records, images, ranges, read_back


def test_magic_payload_is_split(exchanged):
    work, *_ = exchanged
    data = (work / "mxnet.rec").read_bytes()
    # Parts with continuation flags 1, 2 and 3 appear only when MXNet split
    # a record at a magic word.
    flags = set()
    position = 0
    while position < len(data):
        magic, lrecord = struct.unpack_from("<II", data, position)
        assert magic == RECORDIO_MAGIC
        flags.add(lrecord >> 29)
        position += 8 + (((lrecord & (2**29 - 1)) + 3) & ~3)
    assert {1, 2, 3} <= flags


def test_project_writes_mxnet_bytes(exchanged):
    work, *_ = exchanged
    assert (work / "project.rec").read_bytes() == (work / "mxnet.rec").read_bytes()
    assert (work / "project.idx").read_text() == (work / "mxnet.idx").read_text()


def test_project_reads_mxnet_records(exchanged):
    work, records, *_ = exchanged
    with RecordIOReader(work / "mxnet.rec", work / "mxnet.idx") as reader:
        assert list(reader.keys) == list(range(len(records)))
        for key, (_, label, record_id, record_id2, payload) in enumerate(records):
            header, data = unpack_record(reader.read(key))
            assert data == payload, f"record {key}"
            assert header.id == record_id
            assert header.id2 == record_id2
            if isinstance(label, float):
                assert header.flag == 0
                assert header.label == label
            else:
                assert header.flag == len(label)
                np.testing.assert_array_equal(header.label, label)


def test_project_opens_mxnet_dataset(exchanged):
    work, _, images, ranges, _ = exchanged
    (work / "mxnet").mkdir(exist_ok=True)
    for name in ("rec", "idx"):
        (work / "mxnet" / f"train.{name}").write_bytes((work / f"mxnet.{name}").read_bytes())
    (work / "mxnet" / "property").write_text("3,112,112\n")
    with open_insightface_dataset(work / "mxnet") as dataset:
        assert dataset.num_classes == 3
        assert dataset.num_images == len(images)
        assert dataset.header == (len(images) + 1, len(images) + 1 + len(ranges))
        np.testing.assert_array_equal(dataset.identity_ranges(), ranges)
        for position, (label, data) in enumerate(images):
            assert dataset.read_example(position) == (data, label)


def test_mxnet_reads_project_records(exchanged):
    _, records, images, ranges, read_back = exchanged
    assert read_back["header0"] == (len(images) + 1, len(images) + 1 + len(ranges))
    assert len(read_back["records"]) == len(records)
    for (key, flag, label, record_id, record_id2, payload), expected in zip(
        read_back["records"], records
    ):
        _, expected_label, expected_id, expected_id2, expected_payload = expected
        assert payload == expected_payload, f"record {key}"
        assert label == expected_label, f"record {key}"
        assert flag == (0 if isinstance(expected_label, float) else len(expected_label))
        assert (record_id, record_id2) == (expected_id, expected_id2)


def test_header_size_matches_mxnet():
    # MXNet's _IR_FORMAT "IfQQ" in native alignment is 24 bytes on x86-64
    # and aarch64, the same as the little-endian "<IfQQ" used here.
    assert IR_HEADER_SIZE == struct.calcsize("IfQQ") == 24
