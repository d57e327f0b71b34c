"""MXNet NDArray list files (`.params`) read and written with numpy alone.

`mx.nd.save` and `mx.model.save_checkpoint` (MXNet 1.x) write, little-endian:

    uint64 magic 0x112, uint64 reserved
    uint64 count, then `count` NDArrays
    uint64 count of names (0 or the array count), then each name as
        uint64 length + UTF-8 bytes

and each NDArray as

    uint32 magic: 0xF993FAC9 (V2, with storage type), 0xF993FACA (V3, the
        same layout written in numpy-shape mode), 0xF993FAC8 (V1), or no
        magic at all in the oldest files, where this word is already `ndim`
    V2/V3 only: int32 storage type (0 dense, 1 row_sparse, 2 csr)
    shape: int32 ndim + int64 dims (V1-V3); uint32 dims in the oldest files
    int32 device type, int32 device id
    int32 type flag (mshadow: 0 float32, 1 float64, 2 float16, 3 uint8, ...)
    raw data, C order

A checkpoint's names are `arg:NAME` for weights and `aux:NAME` for
BatchNorm moving statistics. Only dense arrays are supported.
"""

import logging
import struct
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

LIST_MAGIC = 0x112
NDARRAY_V1_MAGIC = 0xF993FAC8
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V3_MAGIC = 0xF993FACA
DENSE_STORAGE = 0
STORAGE_TYPES = {0: "dense", 1: "row_sparse", 2: "csr"}
CPU_DEVICE = 1

# mshadow type flags. bfloat16 (12) has no numpy type and is rejected.
DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
    7: np.dtype("?"),
    8: np.dtype("<i2"),
    9: np.dtype("<u2"),
    10: np.dtype("<u4"),
    11: np.dtype("<u8"),
}
TYPE_FLAGS = {dtype: flag for flag, dtype in DTYPES.items()}


class NDArrayFileError(ValueError):
    """A file that is not a complete, readable MXNet NDArray list."""


class _Reader:
    """Sequential little-endian reads that raise on a short file."""

    def __init__(self, data, path):
        self.data = memoryview(data)
        self.path = path
        self.offset = 0

    def read(self, size, field):
        end = self.offset + size
        if end > len(self.data):
            raise NDArrayFileError(
                f"{self.path}: file ends at byte {len(self.data)} while reading "
                f"{field} at byte {self.offset} ({size} bytes needed). The file "
                "is truncated; copy or download it again."
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, fmt, field):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), field))

    def remaining(self):
        return len(self.data) - self.offset


def _read_shape(reader, magic, index):
    field = f"the shape of array {index}"
    if magic in (NDARRAY_V1_MAGIC, NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        (ndim,) = reader.unpack("<i", field)
        if ndim <= 0:
            return ndim, ()
        return ndim, reader.unpack(f"<{ndim}q", field)
    # The oldest layout has no magic: the word just read is ndim.
    ndim = magic
    if ndim > 32:
        raise NDArrayFileError(
            f"{reader.path}: array {index} starts with 0x{magic:08X}, which is "
            "neither an NDArray magic number nor a plausible ndim. The file is "
            "not an MXNet NDArray list or is corrupt."
        )
    return ndim, reader.unpack(f"<{ndim}I", field)


def _read_ndarray(reader, index):
    (magic,) = reader.unpack("<I", f"the header of array {index}")
    if magic in (NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        (storage,) = reader.unpack("<i", f"the storage type of array {index}")
        if storage != DENSE_STORAGE:
            name = STORAGE_TYPES.get(storage, f"unknown ({storage})")
            raise NDArrayFileError(
                f"{reader.path}: array {index} has {name} storage. Only dense "
                "arrays are supported; convert it with `.tostype('default')` "
                "in MXNet and save again."
            )
    ndim, shape = _read_shape(reader, magic, index)
    if ndim == 0 and magic == NDARRAY_V3_MAGIC:
        shape = ()  # a numpy-mode scalar, which has data
    elif ndim <= 0:
        raise NDArrayFileError(
            f"{reader.path}: array {index} is an empty (shapeless) NDArray, "
            "which a model checkpoint never contains."
        )
    if any(dim < 0 for dim in shape):
        raise NDArrayFileError(
            f"{reader.path}: array {index} has an unknown dimension in its "
            f"shape {tuple(shape)}."
        )
    reader.unpack("<ii", f"the device of array {index}")
    (type_flag,) = reader.unpack("<i", f"the data type of array {index}")
    dtype = DTYPES.get(type_flag)
    if dtype is None:
        raise NDArrayFileError(
            f"{reader.path}: array {index} has mshadow type flag {type_flag}, "
            f"which is not supported (supported: {sorted(DTYPES)}; 12 is "
            "bfloat16). Cast the array to float32 in MXNet and save again."
        )
    count = int(np.prod(shape, dtype=np.int64))
    data = reader.read(count * dtype.itemsize, f"the data of array {index}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def load_ndarrays(path):
    """Read an MXNet NDArray list file such as a checkpoint's `.params`.

    The whole file is read and checked before anything is returned, so a
    truncated file raises instead of yielding part of its arrays.

    Returns:
        A dict from name (with its `arg:`/`aux:` prefix, as stored) to a
        numpy array, in file order. Unnamed lists get the names "0", "1", ...

    Raises:
        FileNotFoundError: `path` does not exist.
        NDArrayFileError: the file is not an NDArray list, is truncated, or
            contains sparse or unsupported arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MXNet params file not found: {path}")
    reader = _Reader(path.read_bytes(), path)

    magic, _ = reader.unpack("<QQ", "the file header")
    if magic != LIST_MAGIC:
        raise NDArrayFileError(
            f"{path}: header 0x{magic:X} is not the MXNet NDArray list magic "
            f"0x{LIST_MAGIC:X}. The file is not an MXNet `.params` file."
        )
    (count,) = reader.unpack("<Q", "the array count")
    # Every array takes at least 24 bytes, so a larger count is garbage.
    if count * 24 > reader.remaining():
        raise NDArrayFileError(
            f"{path}: the header announces {count} arrays, more than the "
            f"{reader.remaining()} remaining bytes can hold. The file is "
            "truncated or corrupt."
        )
    arrays = [_read_ndarray(reader, index) for index in range(count)]

    (name_count,) = reader.unpack("<Q", "the name count")
    if name_count not in (0, count):
        raise NDArrayFileError(
            f"{path}: {name_count} names for {count} arrays. The file is corrupt."
        )
    names = []
    for index in range(name_count):
        (length,) = reader.unpack("<Q", f"the length of name {index}")
        raw = reader.read(length, f"name {index}")
        try:
            names.append(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError as error:
            raise NDArrayFileError(
                f"{path}: name {index} is not valid UTF-8 ({error})."
            ) from error
    if not names:
        names = [str(index) for index in range(count)]
    if len(set(names)) != len(names):
        raise NDArrayFileError(f"{path}: the file contains duplicate array names.")
    if reader.remaining():
        # MXNet's own loader ignores trailing bytes too, so only warn.
        logger.warning(
            "%s: %d bytes after the last array name were ignored",
            path,
            reader.remaining(),
        )
    return dict(zip(names, arrays))


def save_ndarrays(path, arrays):
    """Write a dict of numpy arrays as an MXNet NDArray list (V2, dense, CPU).

    `mx.nd.load` and `mx.model.load_checkpoint` read the result. Name the
    arrays `arg:NAME` and `aux:NAME` to write a checkpoint's `.params`.
    """
    chunks = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    for name, array in arrays.items():
        array = np.asarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        type_flag = TYPE_FLAGS.get(dtype)
        if type_flag is None:
            raise ValueError(
                f"array {name!r} has dtype {array.dtype}, which MXNet cannot "
                f"store. Supported: {sorted(str(d) for d in TYPE_FLAGS)}."
            )
        if array.ndim == 0:
            raise ValueError(
                f"array {name!r} is a scalar. MXNet 1.x NDArrays need at least "
                "one dimension; reshape it to (1,)."
            )
        chunks.append(struct.pack("<Ii", NDARRAY_V2_MAGIC, DENSE_STORAGE))
        chunks.append(struct.pack(f"<i{array.ndim}q", array.ndim, *array.shape))
        chunks.append(struct.pack("<iii", CPU_DEVICE, 0, type_flag))
        chunks.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
    chunks.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        encoded = name.encode("utf-8")
        chunks.append(struct.pack("<Q", len(encoded)) + encoded)
    Path(path).write_bytes(b"".join(chunks))
