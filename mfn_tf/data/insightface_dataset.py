"""insightface's training-set folder: `train.rec`, `train.idx`, `property`.

`property` is one line `num_classes,height,width` (for example
`85742,112,112`). Records come in one of two layouts, and both open here
(arcface_torch's `MXFaceDataset` reads both too):

- with a header: record 0 has an array label `(first_identity, end)`.
  Records `1 .. first_identity - 1` are images, whose label is the class
  id (a float, or an array whose first value is the class).
  Records `first_identity .. end - 1` are identity records, one per class
  in class order, whose label `(a, b)` is the range of that class's image
  records, `b` exclusive;
- without a header: every record in the `.idx` is an image.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfn_tf.data.errors import DatasetError
from mfn_tf.data.images import decode_rgb
from mfn_tf.data.recordio import IR_HEADER_SIZE, RecordIOReader, unpack_record

logger = logging.getLogger(__name__)

REC_NAME = "train.rec"
IDX_NAME = "train.idx"
PROPERTY_NAME = "property"
LABELS_NAME = "labels.txt"


def read_property(path):
    """Parse a `property` file into `(num_classes, (height, width))`."""
    path = Path(path)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        values = [int(value) for value in text.split(",")]
        if len(values) != 3 or min(values) <= 0:
            raise ValueError
    except ValueError:
        raise DatasetError(
            f"{path}: expected one line `num_classes,height,width` with "
            f"positive integers (such as `85742,112,112`), got {text[:60]!r}"
        ) from None
    num_classes, height, width = values
    return num_classes, (height, width)


def write_property(path, num_classes, image_size):
    height, width = image_size
    Path(path).write_text(f"{num_classes},{height},{width}\n", encoding="ascii")


def class_from_label(label):
    """Return the class id of an image record's label (float or array)."""
    if np.ndim(label) > 0:
        label = np.asarray(label).ravel()
        if label.size == 0:
            raise ValueError("empty label array")
        label = label[0]
    value = float(label)
    if not value.is_integer():
        raise ValueError(f"label {value} is not an integer class id")
    return int(value)


@dataclass
class InsightFaceDataset:
    """An opened insightface training set.

    Attributes:
        data_dir: the folder.
        num_classes: classes (identities), from `property` or the header.
        image_size: `(height, width)` of every image.
        image_keys: record keys of the image records, in reading order.
        header: `(first_identity, end)` of record 0, or None without a header.
        reader: random access to the records.
    """

    data_dir: Path
    num_classes: int
    image_size: tuple
    image_keys: np.ndarray
    header: tuple | None
    reader: RecordIOReader = field(repr=False)

    @property
    def num_images(self):
        return len(self.image_keys)

    @property
    def rec_path(self):
        return self.reader.rec_path

    def describe(self, position):
        """Name an image for error messages: the file and record key."""
        return f"{self.rec_path}: record {int(self.image_keys[position])}"

    def read_example(self, position):
        """Return `(encoded image bytes, class id)` of the image at `position`.

        `position` counts image records from 0, in `image_keys` order.
        """
        key = int(self.image_keys[position])
        record = self.reader.read(key)
        try:
            header, payload = unpack_record(record)
            label = class_from_label(header.label)
        except ValueError as error:
            raise DatasetError(f"{self.rec_path}: record {key}: {error}") from error
        self._check_label(key, label)
        return payload, label

    def decode_example(self, position):
        """Return `(uint8 RGB array, class id)` of the image at `position`."""
        payload, label = self.read_example(position)
        return decode_rgb(payload, self.describe(position), self.image_size), label

    def identity_ranges(self):
        """Return the `(num_classes, 2)` image-record key range of each class.

        Reads the identity records, so it needs a dataset with a header.
        """
        if self.header is None:
            raise DatasetError(
                f"{self.rec_path} has no header record, so it has no identity "
                "records; scan the image labels instead (`python cli.py data "
                "inspect`)."
            )
        first, end = self.header
        ranges = np.empty((end - first, 2), dtype=np.int64)
        for row, key in enumerate(range(first, end)):
            ranges[row] = _read_identity_range(self.reader, key)
        return ranges

    def read_label(self, position):
        """Return the class id of the image at `position`, reading only the
        record's header and label, not its image."""
        key = int(self.image_keys[position])
        # The IRHeader and up to 4 label values cover insightface's records.
        prefix = self.reader.read_prefix(key, IR_HEADER_SIZE + 16)
        try:
            try:
                header, _ = unpack_record(prefix)
            except ValueError:
                # More label values than the prefix contains: read it all.
                header, _ = unpack_record(self.reader.read(key))
            label = class_from_label(header.label)
        except ValueError as error:
            raise DatasetError(f"{self.rec_path}: record {key}: {error}") from error
        self._check_label(key, label)
        return label

    def _check_label(self, key, label):
        if not 0 <= label < self.num_classes:
            raise DatasetError(
                f"{self.rec_path}: record {key} has class {label}, outside "
                f"0..{self.num_classes - 1} given by {self.data_dir / PROPERTY_NAME}. "
                "The property file does not match the records; fix num_classes "
                "or re-create the dataset."
            )

    def labels(self, progress=False):
        """Return the class id of every image (reads every record header)."""
        positions = range(self.num_images)
        if progress:
            from tqdm import tqdm

            positions = tqdm(positions, desc="reading labels", unit="record")
        return np.fromiter(
            (self.read_label(position) for position in positions),
            dtype=np.int64,
            count=self.num_images,
        )

    def class_names(self):
        """Return the identity names from `labels.txt`, or None without one."""
        path = self.data_dir / LABELS_NAME
        if not path.is_file():
            return None
        names = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")
            if len(fields) >= 2 and fields[0].isdigit():
                names[int(fields[0])] = fields[1]
        return names

    def close(self):
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _read_identity_range(reader, key):
    try:
        header, _ = unpack_record(reader.read(key))
    except ValueError as error:
        raise DatasetError(f"{reader.rec_path}: identity record {key}: {error}") from error
    if header.flag < 2:
        raise DatasetError(
            f"{reader.rec_path}: record {key} should be an identity record with a "
            f"label (first, end), but its IRHeader has flag {header.flag}"
        )
    return int(header.label[0]), int(header.label[1])


def open_insightface_dataset(data_dir):
    """Open and check an insightface training set.

    `data_dir` is the folder, or its `train.rec` (then the `.idx` and
    `property` are looked up beside it, the `.idx` under the same stem).

    The checks read a handful of records, not the whole file:

    - the `.idx` parses and its offsets fall inside the `.rec`;
    - the last indexed record ends exactly where the `.rec` ends, because
      otherwise one of the two is truncated;
    - the header's identity records exist and cover the image records;
    - `property` agrees with the header and with the size of the first image.

    Per-image labels are checked against `num_classes` when they are read.

    Raises:
        DatasetError: any check failed; the message names the file.
    """
    data_dir = Path(data_dir)
    if data_dir.suffix == ".rec":
        rec_path = data_dir
        data_dir = data_dir.parent
        idx_path = rec_path.with_suffix(".idx")
    else:
        if not data_dir.is_dir():
            raise DatasetError(
                f"dataset folder {data_dir} not found; it should contain "
                f"{REC_NAME}, {IDX_NAME} and {PROPERTY_NAME}"
            )
        rec_path = data_dir / REC_NAME
        idx_path = data_dir / IDX_NAME
    if not rec_path.is_file():
        raise DatasetError(
            f"{rec_path} not found. Create a dataset with `python cli.py data "
            "pack-rec` or `python cli.py data synth`."
        )
    reader = RecordIOReader(rec_path, idx_path)
    try:
        return _open_checked(data_dir, reader)
    except BaseException:
        reader.close()
        raise


def _open_checked(data_dir, reader):
    if len(reader) == 0:
        raise DatasetError(f"{reader.idx_path} lists no records")
    _check_index_covers_rec(reader)

    header = _read_header(reader)
    if header is None:
        image_keys = reader.keys.copy()
        identity_count = None
    else:
        first, end = header
        image_keys = np.arange(1, first, dtype=np.int64)
        identity_count = end - first
        _check_header_records(reader, header)
    if len(image_keys) == 0:
        raise DatasetError(f"{reader.rec_path} contains no image records")

    property_path = data_dir / PROPERTY_NAME
    if property_path.is_file():
        num_classes, image_size = read_property(property_path)
        if identity_count is not None and identity_count != num_classes:
            raise DatasetError(
                f"{property_path} gives {num_classes} classes but the header of "
                f"{reader.rec_path} lists {identity_count} identity records. "
                f"Write `{identity_count},{image_size[0]},{image_size[1]}` into "
                "property if the records are right, or re-create the dataset."
            )
    elif identity_count is not None:
        logger.warning(
            "%s not found; using %d classes from the header of %s",
            property_path, identity_count, reader.rec_path,
        )
        num_classes, image_size = identity_count, None
    else:
        raise DatasetError(
            f"{property_path} not found, and {reader.rec_path} has no header "
            "record to count the classes. Write `num_classes,112,112` into "
            "property."
        )

    dataset = InsightFaceDataset(
        data_dir=data_dir,
        num_classes=num_classes,
        image_size=image_size,
        image_keys=image_keys,
        header=header,
        reader=reader,
    )
    first_image, _ = dataset.read_example(0)
    array = decode_rgb(first_image, dataset.describe(0))
    if image_size is None:
        dataset.image_size = array.shape[:2]
    elif array.shape[:2] != tuple(image_size):
        raise DatasetError(
            f"{property_path} gives images of {image_size[1]}x{image_size[0]} but "
            f"{dataset.describe(0)} is {array.shape[1]}x{array.shape[0]} "
            "(width x height). Fix property or re-create the dataset."
        )
    return dataset


def _check_index_covers_rec(reader):
    last = int(np.argmax(reader.index.offsets))
    last_key = int(reader.keys[last])
    _, end = reader.read_with_end(last_key)
    if end != reader.file_size:
        raise DatasetError(
            f"{reader.idx_path} does not cover {reader.rec_path}: its last record "
            f"(key {last_key}) ends at byte {end} but the .rec has "
            f"{reader.file_size} bytes. The .idx is truncated or belongs to "
            "another .rec; rebuild it with "
            f"`python cli.py data reindex {reader.rec_path.parent} --overwrite`."
        )


def _read_header(reader):
    if 0 not in reader:
        return None
    try:
        header, _ = unpack_record(reader.read(0))
    except ValueError as error:
        raise DatasetError(f"{reader.rec_path}: record 0: {error}") from error
    if header.flag == 0:
        return None
    if header.flag < 2:
        # A one-value array label is an image record (arcface_torch reads
        # label[0]), not a header.
        return None
    first, end = int(header.label[0]), int(header.label[1])
    if not 1 <= first <= end:
        raise DatasetError(
            f"{reader.rec_path}: record 0 is a header with the invalid "
            f"identity range ({first}, {end})"
        )
    return first, end


def _check_header_records(reader, header):
    first, end = header
    missing = [key for key in (1, first - 1, first, end - 1) if 0 < key < end and key not in reader]
    if missing:
        raise DatasetError(
            f"{reader.idx_path} has no record {missing[0]}, which the header of "
            f"{reader.rec_path} requires (images 1..{first - 1}, identities "
            f"{first}..{end - 1}). The .idx is truncated; rebuild it with "
            f"`python cli.py data reindex {reader.rec_path.parent} --overwrite`."
        )
    if end == first:
        return
    start, _ = _read_identity_range(reader, first)
    _, stop = _read_identity_range(reader, end - 1)
    if start != 1 or stop != first:
        raise DatasetError(
            f"{reader.rec_path}: the identity records cover image records "
            f"{start}..{stop - 1}, but the header says images are 1..{first - 1}"
        )
