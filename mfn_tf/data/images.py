"""Decoding, encoding and shifting of the face crops that datasets store."""

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mfn_tf.data.errors import DatasetError

# MXNet's `recordio.pack_img` and insightface's packing scripts encode at
# JPEG quality 95.
JPEG_QUALITY = 95

_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
)


def image_format(data):
    """Return "JPEG", "PNG" or "BMP" from the leading bytes, or None."""
    for signature, name in _SIGNATURES:
        if data[: len(signature)] == signature:
            return name
    return None


def decode_rgb(data, source, image_size=None):
    """Decode encoded image bytes to a `(height, width, 3)` uint8 RGB array.

    Args:
        data: JPEG, PNG or BMP bytes.
        source: what to name in an error, such as "train.rec: record 17".
        image_size: `(height, width)` that the image must have, or None.

    Raises:
        DatasetError: the bytes are not a decodable image, or the image
            has another size.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        kind = image_format(data) or "unknown format"
        raise DatasetError(
            f"{source}: the image ({kind}, {len(data)} bytes) cannot be "
            f"decoded: {error}. Replace the image or re-create the dataset."
        ) from error
    if image_size is not None and array.shape[:2] != tuple(image_size):
        height, width = image_size
        raise DatasetError(
            f"{source}: the image is {array.shape[1]}x{array.shape[0]} but the "
            f"dataset expects {width}x{height} (width x height). Align and crop "
            "faces to that size first."
        )
    return array


def read_size(data, source):
    """Return `(format, (height, width))` from an image's header only."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return image.format, (height, width)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"{source}: not a readable image: {error}") from error


def encode_jpeg(array, quality=JPEG_QUALITY):
    """Encode a uint8 RGB array as baseline JPEG bytes (4:2:0, no EXIF).

    The output is the same for the same array and Pillow build.
    """
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "RGB").save(
        buffer, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False
    )
    return buffer.getvalue()


def shift_x(array, pixels):
    """Shift image content right by `pixels` (left when negative).

    The columns that open up repeat the edge column, which looks less
    artificial to a convolutional network than a black band.
    """
    pixels = int(pixels)
    width = array.shape[1]
    if abs(pixels) >= width:
        raise ValueError(f"cannot shift a {width}-pixel-wide image by {pixels} pixels")
    if pixels == 0:
        return array
    shifted = np.empty_like(array)
    if pixels > 0:
        shifted[:, pixels:] = array[:, :-pixels]
        shifted[:, :pixels] = array[:, :1]
    else:
        shifted[:, :pixels] = array[:, -pixels:]
        shifted[:, pixels:] = array[:, -1:]
    return shifted



def load_face(path, image_size, shift=0):
    """Return the bytes to store in a dataset for the image file `path`.

    The original bytes are kept unless `shift` is non-zero, in which case
    the image shifted by `shift_x` is re-encoded as JPEG. Either way the
    image is decoded once, so a broken file fails here with its path.
    """
    source = str(path)
    data = Path(path).read_bytes()
    if shift == 0:
        _, size = read_size(data, source)
        if size != tuple(image_size):
            raise DatasetError(
                f"{source}: the image is {size[1]}x{size[0]}, expected "
                f"{image_size[1]}x{image_size[0]}; align and crop faces first"
            )
        decode_rgb(data, source, image_size)
        return data
    return encode_jpeg(shift_x(decode_rgb(data, source, image_size), shift))


_JPEG_EOI = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"
# Start-of-frame markers that carry the image size (not DHT 0xC4, JPG
# 0xC8, DAC 0xCC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}


def probe(data):
    """Return `(format, (height, width))` by parsing the image's structure.

    The parse is pure Python and takes about 2 us, so the training pipeline
    runs it on every image before TensorFlow decodes it. It finds data that
    is not an image, a truncated JPEG (no end-of-image marker in its last
    bytes) or PNG (no IEND chunk at the end), and the image size. It does
    not decode pixels, so it misses a corrupt JPEG scan.

    Raises:
        ValueError: the structure is invalid, with the defect in the message.
    """
    kind = image_format(data)
    if kind == "JPEG":
        return kind, _probe_jpeg(data)
    if kind == "PNG":
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise ValueError("PNG without an IHDR chunk")
        if not data.endswith(_PNG_END):
            raise ValueError("PNG does not end with an IEND chunk (truncated)")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return kind, (height, width)
    if kind == "BMP":
        if len(data) < 26:
            raise ValueError("BMP shorter than its header")
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)
        return kind, (abs(height), width)
    raise ValueError(f"not a JPEG, PNG or BMP image (starts with {bytes(data[:8]).hex()})")


def _probe_jpeg(data):
    # Writers may append a few bytes after the end-of-image marker, so
    # look for it near the end instead of exactly at it.
    if _JPEG_EOI not in data[-16:]:
        raise ValueError("JPEG without an end-of-image marker (truncated)")
    position = 2
    size = len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2 or position + 2 + length > size:
            raise ValueError(f"JPEG segment at byte {position} runs past the end")
        if marker in _JPEG_SOF:
            if length < 7:
                raise ValueError("JPEG frame header too short")
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return height, width
        if marker == 0xDA:  # start of scan before any frame header
            break
        position += 2 + length
    raise ValueError("JPEG without a frame header")
