"""Verification `.bin` files: the three variants in the wild and round trips."""

import io
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from mfn_tf.data.verification_bin import decode_images, load_bin, save_bin


def jpeg(value):
    buffer = io.BytesIO()
    Image.new("RGB", (112, 112), (value, 0, 255 - value)).save(buffer, format="JPEG")
    return buffer.getvalue()


IMAGES = [jpeg(value) for value in (10, 60, 110, 160)]
ISSAME = [True, False]


def python2_pickle(images, issame):
    """A pickle as Python 2 wrote `(bins, issame)`: image bytes are `str`
    objects (BINSTRING), which Python 3 loads only with encoding="bytes"."""
    out = [b"\x80\x02(]q\x00("]
    for data in images:
        out.append(b"T" + struct.pack("<I", len(data)) + data)
    out.append(b"e]q\x01(")
    out.extend(b"\x88" if same else b"\x89" for same in issame)
    out.append(b"et.")
    return b"".join(out)


def test_round_trip(tmp_path):
    path = tmp_path / "a.bin"
    save_bin(path, IMAGES, ISSAME)
    images, issame = load_bin(path)
    assert images == IMAGES
    assert issame.dtype == bool
    np.testing.assert_array_equal(issame, ISSAME)
    assert not (tmp_path / "a.bin.partial").exists()


def test_python2_variant(tmp_path):
    path = tmp_path / "py2.bin"
    path.write_bytes(python2_pickle(IMAGES, ISSAME))
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())
    images, issame = load_bin(path)
    assert images == IMAGES
    np.testing.assert_array_equal(issame, ISSAME)


def test_numpy_array_variant(tmp_path):
    path = tmp_path / "arrays.bin"
    arrays = [np.frombuffer(data, dtype=np.uint8).reshape(-1, 1) for data in IMAGES]
    path.write_bytes(pickle.dumps((arrays, ISSAME), protocol=2))
    images, issame = load_bin(path)
    assert images == IMAGES
    np.testing.assert_array_equal(issame, ISSAME)


@pytest.mark.shared_data
def test_insightface_small_bin(shared_data):
    """insightface's re-packed set: numpy arrays pickled against
    `numpy.core.multiarray`, which numpy 2 renamed."""
    path = shared_data / "insightface_small" / "small_lfw.bin"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    images, issame = load_bin(path)
    assert len(images) == 20
    assert issame.all()
    assert decode_images(images).shape == (20, 112, 112, 3)


def test_save_rejects_odd_image_count(tmp_path):
    with pytest.raises(ValueError, match="two images per pair"):
        save_bin(tmp_path / "x.bin", IMAGES[:3], ISSAME)


def test_decode_reports_index():
    with pytest.raises(ValueError, match="image 1 cannot be decoded"):
        decode_images([IMAGES[0], b"garbage"])
