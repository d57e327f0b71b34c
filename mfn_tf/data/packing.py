"""Pack image folders into an insightface training set.

The output is what insightface's packing scripts produce and its trainers
read: `train.rec`/`train.idx` with a header record, image records with the
class id as label, one identity record per class, and `property`. A
`labels.txt` (class id, identity name, image count) is written beside them
to trace classes back to identities.
"""

import logging
from pathlib import Path

from tqdm import tqdm

from mfn_tf.data.errors import DatasetError
from mfn_tf.data.image_folders import list_identity_images
from mfn_tf.data.images import load_face
from mfn_tf.data.insightface_dataset import (
    IDX_NAME,
    LABELS_NAME,
    PROPERTY_NAME,
    REC_NAME,
    write_property,
)
from mfn_tf.data.recordio import IRHeader, RecordIOWriter, pack_record

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
OUTPUT_NAMES = (REC_NAME, IDX_NAME, PROPERTY_NAME, LABELS_NAME)


def parse_identity_list(value):
    """Return identity names from a file (one per line, `#` comments) or a
    comma-separated list."""
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        names = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line)
        return names
    return [name.strip() for name in str(value).split(",") if name.strip()]


def select_identities(identities, include=None, exclude=None, min_images=1):
    """Filter `{name: image paths}` and return the kept names in sorted order.

    Raises:
        DatasetError: `include` names an identity that has no folder, or
            nothing is left.
    """
    names = sorted(identities)
    if include is not None:
        missing = sorted(set(include) - set(identities))
        if missing:
            raise DatasetError(
                f"{len(missing)} identities to include have no folder, such as "
                f"{missing[0]!r}; check the spelling or the image root"
            )
        names = sorted(set(include))
    if exclude:
        unknown = set(exclude) - set(identities)
        if unknown:
            logger.info("%d identities to exclude have no folder anyway", len(unknown))
        names = [name for name in names if name not in set(exclude)]
    too_few = [name for name in names if len(identities[name]) < min_images]
    if too_few:
        logger.info("dropped %d identities with fewer than %d images", len(too_few), min_images)
    names = [name for name in names if len(identities[name]) >= min_images]
    if not names:
        raise DatasetError(
            "no identity is left after the include, exclude and minimum-image "
            "filters; relax them"
        )
    return names


def check_outputs_free(out_dir, overwrite):
    """Raise unless the dataset files in `out_dir` may be written."""
    existing = [name for name in OUTPUT_NAMES if (Path(out_dir) / name).exists()]
    if existing and not overwrite:
        raise DatasetError(
            f"{Path(out_dir) / existing[0]} already exists; choose another output "
            "folder or pass --overwrite to replace the dataset"
        )


def write_dataset(out_dir, identities, image_size, load_image, overwrite=False, progress=True):
    """Write an insightface training set from `{name: [image item]}`.

    `load_image(item)` returns the encoded bytes to store for an item (a
    path, or the bytes themselves). Classes are numbered in the order of
    `identities`. Every file is first
    written under a `.partial` name and renamed once all are complete, so
    an interrupted run never leaves a dataset that looks finished.

    Returns:
        The number of image records written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_outputs_free(out_dir, overwrite)
    partial = {name: out_dir / (name + PARTIAL_SUFFIX) for name in OUTPUT_NAMES}
    num_images = sum(len(items) for items in identities.values())
    # Keys as insightface lays them out: 0 header, 1..N images,
    # N+1..N+C identity records.
    first_identity = num_images + 1
    end = first_identity + len(identities)
    try:
        with RecordIOWriter(partial[REC_NAME], partial[IDX_NAME]) as writer:
            writer.write(0, pack_record(IRHeader(0, (first_identity, end), 0, 0), b""))
            key = 1
            ranges = []
            bar = tqdm(total=num_images, desc=f"packing {out_dir.name or out_dir}",
                       unit="image", disable=not progress)
            with bar:
                for label, items in enumerate(identities.values()):
                    start = key
                    for item in items:
                        data = load_image(item)
                        writer.write(key, pack_record(IRHeader(0, float(label), key, 0), data))
                        key += 1
                        bar.update()
                    ranges.append((start, key))
            for label, (start, stop) in enumerate(ranges):
                header = IRHeader(0, (start, stop), first_identity + label, 0)
                writer.write(first_identity + label, pack_record(header, b""))
        write_property(partial[PROPERTY_NAME], len(identities), image_size)
        with open(partial[LABELS_NAME], "w", encoding="utf-8") as labels_file:
            labels_file.write("# class\tidentity\timages\n")
            for label, (name, items) in enumerate(identities.items()):
                labels_file.write(f"{label}\t{name}\t{len(items)}\n")
    except BaseException:
        for path in partial.values():
            path.unlink(missing_ok=True)
        raise
    # property is renamed last, so a folder with a property file contains
    # a complete record set.
    for name in (REC_NAME, IDX_NAME, LABELS_NAME, PROPERTY_NAME):
        partial[name].replace(out_dir / name)
    logger.info("wrote %d images of %d identities to %s", num_images, len(identities), out_dir)
    return num_images


def pack_rec(images_root, out_dir, include=None, exclude=None, min_images=1,
             shift=0, image_size=(112, 112), overwrite=False, progress=True):
    """Pack image folders (one per identity) into `out_dir`.

    Args:
        images_root: folder of identity folders.
        out_dir: folder that receives `train.rec`, `train.idx`, `property`
            and `labels.txt`.
        include: identity names to keep (all when None).
        exclude: identity names to drop.
        min_images: drop identities with fewer images.
        shift: shift image content right by this many pixels (left when
            negative). Shifted images are re-encoded as JPEG quality 95, and
            the others are stored with their original bytes.
        overwrite: replace an existing dataset in `out_dir`.

    Returns:
        `(num_identities, num_images)`.
    """
    check_outputs_free(out_dir, overwrite)
    all_identities = list_identity_images(images_root)
    names = select_identities(all_identities, include, exclude, min_images)
    identities = {name: all_identities[name] for name in names}

    def load_image(path):
        return load_face(path, image_size, shift)

    num_images = write_dataset(out_dir, identities, image_size, load_image, overwrite, progress)
    return len(identities), num_images
