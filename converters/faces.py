"""Aligned face images for parity checks and int8 calibration.

Converters need real faces, because random pixels produce other
activation ranges than a deployed model meets, which hides quantization
error and overflows. Any folder of aligned 112x112 RGB crops
works (the layout of LFW or of an image-folder dataset); it is searched
recursively.
"""

from pathlib import Path

import numpy as np

from mfn_tf.data.errors import DatasetError
from mfn_tf.data.image_folders import IMAGE_EXTENSIONS
from mfn_tf.data.images import decode_rgb


class FaceImagesError(ValueError):
    """A face folder that is missing, empty or contains unusable images."""


def find_face_images(folder):
    """Return the image files under `folder`, recursively, in sorted order.

    Raises:
        FaceImagesError: `folder` is not a directory or contains no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FaceImagesError(
            f"face folder not found: {folder}. Pass a folder of aligned "
            "112x112 face crops (JPEG, PNG or BMP, searched recursively)."
        )
    paths = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )
    if not paths:
        raise FaceImagesError(
            f"{folder} contains no {'/'.join(IMAGE_EXTENSIONS)} images; pass a "
            "folder of aligned 112x112 face crops"
        )
    return paths


def spread_sample(paths, count):
    """Return `count` paths spread evenly over the sorted list.

    A sorted image folder groups each identity's images together, so taking
    every k-th path covers many identities, where the first `count` paths
    would cover a few. Deterministic: the same folder gives the same sample.
    """
    if count >= len(paths):
        return list(paths)
    indices = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [paths[index] for index in indices]


def load_faces(paths, image_size=112):
    """Decode face images to a float32 `(N, size, size, 3)` RGB array, 0-255.

    Raises:
        FaceImagesError: an image cannot be decoded or has another size.
    """
    faces = np.empty((len(paths), image_size, image_size, 3), dtype=np.float32)
    for index, path in enumerate(paths):
        try:
            faces[index] = decode_rgb(
                Path(path).read_bytes(), str(path), (image_size, image_size)
            )
        except DatasetError as error:
            raise FaceImagesError(str(error)) from error
    return faces


def sample_faces(folder, count, image_size=112):
    """Load `count` faces spread over `folder` (fewer if it has fewer).

    Returns:
        `(faces, paths)`: the float32 RGB array and the files it came from.
    """
    paths = spread_sample(find_face_images(folder), count)
    return load_faces(paths, image_size), paths
