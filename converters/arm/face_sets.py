"""The real faces an emulated check runs on: a folder sample or LFW pairs.

Emulated inference takes seconds per face, so the faces are chosen on the
host first. Without pairs, `count` faces spread over a folder. With an
LFW `pairs.txt`, a number of pairs: spread evenly over the file, or the
pairs whose Keras distance is nearest the verification threshold, which
are the only ones a small change of the embeddings can flip.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from converters.arm.metrics import model_threshold, pair_distances
from converters.faces import FaceImagesError, load_faces, sample_faces, spread_sample
from mfn_tf.data.images import shift_x
from mfn_tf.data.lfw import read_pairs

logger = logging.getLogger(__name__)

PAIR_SELECTIONS = ("spread", "nearest")
KERAS_BATCH_SIZE = 64


@dataclass
class FaceSet:
    """uint8 `(N, H, W, 3)` RGB faces, their Keras embeddings and optional pairs.

    `pair_indices` contains one `(i, j)` row of face indices per pair, and
    `issame` the pair's label.
    """

    images: np.ndarray
    paths: list
    reference: np.ndarray
    pair_indices: np.ndarray = None
    issame: np.ndarray = None
    threshold: float = None
    description: dict = field(default_factory=dict)


def _load_uint8(paths, image_size, shift, description):
    faces = load_faces(paths, image_size)
    if shift:
        faces = np.stack([shift_x(face, shift) for face in faces])
    logger.info("loaded %d %s", len(paths), description)
    return faces.astype(np.uint8)


def embed_with_keras(model, images, progress=True, description="Keras embeddings"):
    """Embed uint8 faces with the Keras model, in batches, with a progress bar."""
    batches = range(0, len(images), KERAS_BATCH_SIZE)
    outputs = []
    for start in tqdm(batches, desc=description, unit="batch", disable=not progress):
        batch = images[start : start + KERAS_BATCH_SIZE].astype(np.float32)
        outputs.append(np.asarray(model(batch, training=False), dtype=np.float32))
    return np.concatenate(outputs)


def folder_face_set(model, images_dir, count, image_size=112, shift=0, progress=True):
    """Sample `count` faces spread over `images_dir` and embed them with Keras."""
    _, paths = sample_faces(images_dir, count, image_size)
    images = _load_uint8(paths, image_size, shift, f"faces from {images_dir}")
    return FaceSet(
        images=images,
        paths=[str(path) for path in paths],
        reference=embed_with_keras(model, images, progress),
        description={"dir": str(images_dir), "count": len(paths), "shift_x": shift},
    )


def pairs_face_set(
    model,
    pairs_path,
    images_dir,
    count,
    selection="spread",
    threshold=None,
    image_size=112,
    shift=0,
    progress=True,
):
    """Choose `count` LFW pairs and return their faces, embedded with Keras.

    The threshold is `threshold` when given. Otherwise, and for the
    "nearest" selection, the Keras model embeds the faces of every pair in
    the file, and the 10-fold protocol on all pairs sets the threshold.

    Raises:
        ValueError: an unknown selection or too few pairs.
        FaceImagesError: an image the pairs name is missing or unusable.
    """
    if selection not in PAIR_SELECTIONS:
        raise ValueError(f"unknown pair selection {selection!r}; expected one of {PAIR_SELECTIONS}")
    pairs = read_pairs(pairs_path)
    description = {
        "file": str(pairs_path),
        "images_dir": str(images_dir),
        "pairs_in_file": len(pairs),
        "selection": selection,
        "shift_x": shift,
    }

    use_all_pairs = threshold is None or selection == "nearest"
    if use_all_pairs:
        candidates = pairs
    else:
        candidates = spread_sample(pairs, count)
    paths = sorted({path for pair in candidates for path in pair.paths(images_dir)})
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise FaceImagesError(
            f"{len(missing)} image(s) named in {pairs_path} are missing under {images_dir}, "
            f"first {missing[0]}; pass the aligned LFW folder as --images-dir"
        )
    index_of = {path: index for index, path in enumerate(paths)}
    images = _load_uint8(paths, image_size, shift, f"faces of {len(candidates)} pairs")
    reference = embed_with_keras(model, images, progress)
    pair_indices = np.array(
        [[index_of[path] for path in pair.paths(images_dir)] for pair in candidates]
    )
    issame = np.array([pair.issame for pair in candidates])

    if threshold is None:
        threshold, accuracy = model_threshold(pair_distances(reference, pair_indices), issame)
        description["threshold_source"] = (
            f"median of the 10-fold protocol's thresholds on all {len(candidates)} pairs, "
            "Keras model"
        )
        description["keras_10fold_accuracy"] = accuracy
    else:
        description["threshold_source"] = "given (--threshold)"

    if use_all_pairs:
        if selection == "nearest":
            margins = np.abs(pair_distances(reference, pair_indices) - threshold)
            chosen = np.sort(np.argsort(margins, kind="stable")[:count])
            # Every pair left out is at least this far from the threshold.
            description["excluded_pairs_min_margin"] = (
                float(np.sort(margins)[count]) if count < len(margins) else None
            )
        else:
            chosen = np.array(spread_sample(list(range(len(candidates))), count))
        pair_indices = pair_indices[chosen]
        issame = issame[chosen]
        # Keep only the faces of the chosen pairs and renumber them.
        used = np.unique(pair_indices)
        pair_indices = np.searchsorted(used, pair_indices)
        images, reference = images[used], reference[used]
        paths = [paths[index] for index in used]

    description["count"] = int(len(issame))
    description["same"] = int(np.count_nonzero(issame))
    description["different"] = int(np.count_nonzero(~issame))
    description["faces"] = len(paths)
    description["threshold"] = float(threshold)
    return FaceSet(
        images=images,
        paths=[str(path) for path in paths],
        reference=reference,
        pair_indices=pair_indices,
        issame=issame,
        threshold=float(threshold),
        description=description,
    )
