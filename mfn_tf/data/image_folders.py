"""Image folders, one per identity: `ROOT/<identity>/<image>.jpg`.

Identities are the sub-folders in sorted order, so class ids are stable
for the same set of folders. Files with other extensions are ignored.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfn_tf.data.errors import DatasetError
from mfn_tf.data.images import decode_rgb

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_identity_images(root):
    """Return `{identity: [image paths, sorted]}` for every sub-folder.

    Identities without images are kept with an empty list, so callers can
    report them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"image folder {root} not found; it should contain one sub-folder "
            "of images per identity"
        )
    identities = {}
    ignored = 0
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        images = []
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(path)
            else:
                ignored += 1
        identities[folder.name] = images
    if ignored:
        logger.debug("ignored %d entries that are not %s files", ignored, "/".join(IMAGE_EXTENSIONS))
    if not identities:
        raise DatasetError(f"{root} has no sub-folders; expected one folder per identity")
    return identities


@dataclass
class ImageFolderDataset:
    """Image folders opened for training.

    Attributes:
        root: the folder of identity folders.
        class_names: identity names; the class id is the position.
        paths: every image path, grouped by class.
        image_labels: the class id of each path.
        image_size: `(height, width)` every image must have.
    """

    root: Path
    class_names: list
    paths: list
    image_labels: np.ndarray
    image_size: tuple

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def num_images(self):
        return len(self.paths)

    def describe(self, position):
        return str(self.paths[position])

    def read_example(self, position):
        """Return `(encoded image bytes, class id)` of image `position`."""
        path = self.paths[position]
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DatasetError(f"{path}: cannot be read: {error}") from error
        return data, int(self.image_labels[position])

    def decode_example(self, position):
        data, label = self.read_example(position)
        return decode_rgb(data, self.describe(position), self.image_size), label


def open_image_folders(root, image_size=(112, 112)):
    """Open image folders as a labelled dataset.

    Identities without images are skipped (and logged), so class ids are
    consecutive over identities that have images.
    """
    identities = list_identity_images(root)
    class_names, paths, labels = [], [], []
    empty = [name for name, images in identities.items() if not images]
    if empty:
        logger.warning("%d identity folders have no images and are skipped, such as %s",
                       len(empty), empty[0])
    for name, images in identities.items():
        if not images:
            continue
        label = len(class_names)
        class_names.append(name)
        paths.extend(images)
        labels.extend([label] * len(images))
    if not paths:
        raise DatasetError(f"{root}: no {'/'.join(IMAGE_EXTENSIONS)} images found")
    return ImageFolderDataset(
        root=Path(root),
        class_names=class_names,
        paths=paths,
        image_labels=np.asarray(labels, dtype=np.int64),
        image_size=tuple(image_size),
    )
