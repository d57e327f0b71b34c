"""insightface verification sets (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`).

A `.bin` file is a pickle of `(bins, issame)`: `bins` holds the encoded
images of every pair, in order `a0, b0, a1, b1, ...`, and `issame` holds one
bool per pair. Three variants exist in the wild, and all load here:

- `bins` items are `bytes` (insightface's own Python 3 files);
- they were Python 2 `str` objects (older files, which need
  `encoding="bytes"` to unpickle);
- they are numpy `uint8` arrays of the encoded bytes, pickled with a
  reference to `numpy.core.multiarray` (some re-packed sets).

Unpickling runs code named in the file, so only the handful of classes
these variants use are allowed.
"""

import io
import pickle
from pathlib import Path

import numpy as np

from mfn_tf.data.errors import DatasetError

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("builtins", "bytes"): ("builtins", "bytes"),
    ("__builtin__", "bytes"): ("builtins", "bytes"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class InvalidBinError(DatasetError):
    """A file that is not a readable insightface verification `.bin`."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a verification .bin"
            )
        target_module, target_name = target
        if target_module == "numpy._core.multiarray":
            import numpy._core.multiarray as multiarray

            return getattr(multiarray, target_name)
        return super().find_class(target_module, target_name)


def _unpickle(data, encoding):
    return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def _to_bytes(item):
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        return item.tobytes()
    if isinstance(item, str):
        # A Python 2 str unpickled as text: its code points are the bytes.
        return item.encode("latin1")
    raise TypeError(f"unsupported image entry of type {type(item).__name__}")


def load_bin(path):
    """Load a verification `.bin`.

    Returns:
        `(images, issame)`: a list of `2 * len(issame)` encoded images as
        `bytes` (JPEG or PNG), and a bool numpy array with one entry per pair.

    Raises:
        FileNotFoundError: `path` does not exist.
        InvalidBinError: the file is not a pickle of `(bins, issame)` with
            two images per pair.
    """
    path = Path(path)
    data = path.read_bytes()
    loaded = None
    errors = []
    # Python 3 files load with the default encoding; Python 2 files raise
    # UnicodeDecodeError there and need encoding="bytes".
    for encoding in ("ASCII", "bytes"):
        try:
            loaded = _unpickle(data, encoding)
            break
        except UnicodeDecodeError as error:
            errors.append(error)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
                AttributeError, IndexError, KeyError, MemoryError) as error:
            raise InvalidBinError(
                f"{path} is not a verification .bin (a pickle of "
                f"(images, issame)): {type(error).__name__}: {error}. "
                "Re-create it with `python cli.py data pack-bin`."
            ) from error
    if loaded is None:
        raise InvalidBinError(f"{path}: cannot decode the pickle: {errors[-1]}")

    if not (isinstance(loaded, (tuple, list)) and len(loaded) == 2):
        raise InvalidBinError(
            f"{path}: expected a pickled pair (images, issame), got "
            f"{type(loaded).__name__}"
        )
    bins, issame = loaded
    try:
        issame = np.asarray([bool(value) for value in issame], dtype=bool)
    except TypeError as error:
        raise InvalidBinError(f"{path}: issame is not a list of bools") from error
    if len(bins) != 2 * len(issame):
        raise InvalidBinError(
            f"{path}: {len(bins)} images for {len(issame)} pairs; a .bin "
            "needs exactly two images per pair"
        )
    images = []
    for index, item in enumerate(bins):
        try:
            images.append(_to_bytes(item))
        except TypeError as error:
            raise InvalidBinError(f"{path}: image {index}: {error}") from error
    return images, issame


def save_bin(path, images, issame):
    """Write a verification `.bin` as insightface does: a pickle (protocol 4)
    of `(list of bytes, list of bool)`.

    The file is written to a temporary name first, so an interrupted write
    never leaves a partial `.bin` under `path`.
    """
    images = [bytes(image) for image in images]
    issame = [bool(value) for value in issame]
    if len(images) != 2 * len(issame):
        raise ValueError(
            f"save_bin needs two images per pair: got {len(images)} images "
            f"for {len(issame)} pairs"
        )
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        pickle.dump((images, issame), f, protocol=4)
    partial.replace(path)


def decode_images(images, image_size=(112, 112)):
    """Decode encoded images to a `(N, height, width, 3)` uint8 RGB array.

    Raises:
        ValueError: an image cannot be decoded or has another size; the
            message gives its index.
    """
    from PIL import Image, UnidentifiedImageError

    height, width = image_size
    out = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for index, data in enumerate(images):
        try:
            with Image.open(io.BytesIO(data)) as image:
                array = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"image {index} cannot be decoded: {error}") from error
        if array.shape[:2] != (height, width):
            raise ValueError(
                f"image {index} is {array.shape[1]}x{array.shape[0]}, "
                f"expected {width}x{height}"
            )
        out[index] = array
    return out
