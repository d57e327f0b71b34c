"""Face folders for parity, calibration and QAT: sampling and errors."""

import numpy as np
import pytest
from PIL import Image

from converters.convert import _sample_face_sets
from converters.faces import FaceImagesError, find_face_images, load_faces, spread_sample
from converters.options import ConvertOptions


@pytest.fixture
def face_folder(tmp_path):
    """12 flat 112x112 images in two identity folders; image i has value i."""
    for index in range(12):
        folder = tmp_path / f"person_{index % 2}"
        folder.mkdir(exist_ok=True)
        pixels = np.full((112, 112, 3), index * 10, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{index:02d}.png")
    return tmp_path


def values(faces):
    return {int(face[0, 0, 0]) for face in faces}


def test_find_sorted_recursive(face_folder):
    paths = find_face_images(face_folder)
    assert len(paths) == 12
    assert paths == sorted(paths)
    assert paths[0].parent.name == "person_0"


def test_missing_folder(tmp_path):
    with pytest.raises(FaceImagesError, match="not found"):
        find_face_images(tmp_path / "absent")


def test_empty_folder(tmp_path):
    with pytest.raises(FaceImagesError, match="no .jpg"):
        find_face_images(tmp_path)


def test_wrong_size_named(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((50, 60, 3), dtype=np.uint8)).save(path)
    with pytest.raises(FaceImagesError, match="small.png"):
        load_faces([path])


def test_spread_sample_even():
    assert spread_sample(list(range(10)), 3) == [0, 4, 9]
    assert spread_sample(list(range(3)), 5) == [0, 1, 2]


def test_parity_disjoint_from_calibration(face_folder):
    options = ConvertOptions(
        calibration_dir=face_folder,
        parity_count=4,
        calibration_count=3,
        qat=True,
        qat_face_count=8,
    )
    faces = _sample_face_sets(options, 112)
    assert len(faces.parity) == 4
    assert len(faces.calibration) == 3
    assert len(faces.qat) == 8
    assert not values(faces.parity) & values(faces.calibration)
    assert not values(faces.parity) & values(faces.qat)


def test_no_faces_left_for_calibration(face_folder):
    options = ConvertOptions(calibration_dir=face_folder, parity_count=12)
    with pytest.raises(ValueError, match="no faces left"):
        _sample_face_sets(options, 112)
