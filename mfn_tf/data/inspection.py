"""Summaries and contact sheets of training sets and verification `.bin`s."""

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mfn_tf.data.errors import DatasetError
from mfn_tf.data.image_folders import open_image_folders
from mfn_tf.data.images import decode_rgb, probe
from mfn_tf.data.insightface_dataset import REC_NAME, open_insightface_dataset
from mfn_tf.data.verification_bin import load_bin

logger = logging.getLogger(__name__)


@dataclass
class DatasetSummary:
    """Summary of a dataset, as `python cli.py data inspect` prints it.

    `formats` and `sizes` count the `images_checked` images, which are a
    random sample of a large training set.
    """

    path: Path
    kind: str  # "insightface", "image folders" or "verification bin"
    num_images: int
    num_classes: int | None = None
    images_per_class: np.ndarray | None = None
    num_pairs: int | None = None
    num_same_pairs: int | None = None
    has_header: bool | None = None
    images_checked: int = 0
    decoded: bool = False
    formats: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)

    def lines(self):
        """Return the summary as text lines."""
        lines = [f"{self.path}: {self.kind}", f"  images: {self.num_images}"]
        if self.num_classes is not None:
            lines.append(f"  classes: {self.num_classes}")
        if self.has_header is not None:
            lines.append(f"  header record: {'yes' if self.has_header else 'no'}")
        if self.images_per_class is not None and len(self.images_per_class):
            counts = self.images_per_class
            lines.append(
                f"  images per class: min {counts.min()}, median "
                f"{np.median(counts):g}, max {counts.max()}"
            )
        if self.num_pairs is not None:
            lines.append(
                f"  pairs: {self.num_pairs} ({self.num_same_pairs} same, "
                f"{self.num_pairs - self.num_same_pairs} different)"
            )
        how = "decoded" if self.decoded else "headers read"
        lines.append(f"  images checked: {self.images_checked} ({how})")
        for name, counter in (("formats", self.formats), ("sizes (WxH)", self.sizes)):
            text = ", ".join(f"{key} x{count}" for key, count in counter.most_common())
            lines.append(f"  {name}: {text}")
        return lines


def _check_images(summary, encoded_items, count, decode, progress):
    """Count formats and sizes; decode fully when `decode` is set.

    `encoded_items` yields `count` pairs `(bytes, source name)`.
    """
    for data, source in tqdm(encoded_items, total=count, desc="checking images",
                             unit="image", disable=not progress):
        try:
            kind, (height, width) = probe(data)
        except ValueError as error:
            raise DatasetError(f"{source}: invalid image: {error}") from error
        if decode:
            decode_rgb(data, source)
        summary.formats[kind] += 1
        summary.sizes[f"{width}x{height}"] += 1
        summary.images_checked += 1
    summary.decoded = decode


def _sample_positions(count, sample, seed=0):
    if sample is None or sample >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, sample, replace=False))


def summarize(path, sample=2000, decode=False, progress=True):
    """Summarize a dataset folder, a `.rec`, image folders or a `.bin`.

    Args:
        sample: number of random images whose format and size are read
            (None: all of them).
        decode: decode each checked image fully, which finds corrupt image
            data that the structure check misses.
    """
    path = Path(path)
    if path.suffix == ".bin":
        return _summarize_bin(path, decode, progress)
    if path.suffix == ".rec" or (path / REC_NAME).is_file():
        return _summarize_rec(path, sample, decode, progress)
    if path.is_dir():
        return _summarize_folders(path, sample, decode, progress)
    raise DatasetError(
        f"{path} not found, or not a dataset folder, a .rec, image folders or a .bin"
    )


def _summarize_rec(path, sample, decode, progress):
    with open_insightface_dataset(path) as dataset:
        if dataset.header is not None:
            ranges = dataset.identity_ranges()
            counts = ranges[:, 1] - ranges[:, 0]
        else:
            labels = dataset.labels(progress=progress)
            counts = np.bincount(labels, minlength=dataset.num_classes)
        summary = DatasetSummary(
            path=dataset.data_dir,
            kind="insightface",
            num_images=dataset.num_images,
            num_classes=dataset.num_classes,
            images_per_class=counts,
            has_header=dataset.header is not None,
        )
        positions = _sample_positions(dataset.num_images, sample)
        items = ((dataset.read_example(int(p))[0], dataset.describe(int(p))) for p in positions)
        _check_images(summary, items, len(positions), decode, progress)
    return summary


def _summarize_folders(path, sample, decode, progress):
    dataset = open_image_folders(path)
    counts = np.bincount(dataset.image_labels, minlength=dataset.num_classes)
    summary = DatasetSummary(
        path=path, kind="image folders", num_images=dataset.num_images,
        num_classes=dataset.num_classes, images_per_class=counts,
    )
    positions = _sample_positions(dataset.num_images, sample)
    items = ((dataset.read_example(int(p))[0], dataset.describe(int(p))) for p in positions)
    _check_images(summary, items, len(positions), decode, progress)
    return summary


def _summarize_bin(path, decode, progress):
    images, issame = load_bin(path)
    summary = DatasetSummary(
        path=path, kind="verification bin", num_images=len(images),
        num_pairs=len(issame), num_same_pairs=int(issame.sum()),
    )
    items = ((data, f"{path}: image {index}") for index, data in enumerate(images))
    _check_images(summary, items, len(images), decode, progress)
    return summary


def write_contact_sheet(path, out_path, identities=8, images_per_identity=8):
    """Draw a PNG grid of a few identities, or of the first pairs of a `.bin`.

    A training set gets one row per identity (identities spread evenly
    over the classes) with up to `images_per_identity` of its images. A
    `.bin` gets `identities` rows of four pairs, each titled same or
    different.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix == ".bin":
        cells, titles, columns = _pair_cells(path, identities * _PAIRS_PER_ROW)
        row_titles = None
    else:
        rows, row_titles = _identity_rows(path, identities, images_per_identity)
        columns = max(len(row) for row in rows)
        cells = [image for row in rows for image in row + [None] * (columns - len(row))]
        titles = [None] * len(cells)
    num_rows = -(-len(cells) // columns)
    cell_width = 2.2 if path.suffix == ".bin" else 1.1
    figure, axes = plt.subplots(
        num_rows, columns, squeeze=False,
        figsize=(cell_width * columns + (1.6 if row_titles else 0.2), 1.25 * num_rows + 0.4),
    )
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index < len(cells) and cells[index] is not None:
            axis.imshow(cells[index])
            if titles[index]:
                axis.set_title(titles[index], fontsize=7, pad=2)
    for row_axes, title in zip(axes, row_titles or []):
        row_axes[0].text(-0.08, 0.5, title, transform=row_axes[0].transAxes,
                         ha="right", va="center", fontsize=7)
    figure.suptitle(path.name if path.suffix else path.resolve().name, fontsize=9)
    figure.tight_layout(rect=(0.12 if row_titles else 0, 0, 1, 0.97))
    figure.savefig(out_path, dpi=100)
    plt.close(figure)
    logger.info("wrote contact sheet %s", out_path)


_PAIRS_PER_ROW = 4


def _pair_cells(path, pairs):
    images, issame = load_bin(path)
    cells, titles = [], []
    for pair in range(min(pairs, len(issame))):
        first, second = (decode_rgb(images[2 * pair + k], f"{path}: image {2 * pair + k}")
                         for k in (0, 1))
        gap = np.full((first.shape[0], 4, 3), 255, dtype=np.uint8)
        cells.append(np.concatenate([first, gap, second], axis=1))
        titles.append(f"pair {pair}: {'same' if issame[pair] else 'different'}")
    return cells, titles, min(_PAIRS_PER_ROW, len(cells))


def _identity_rows(path, identities, images_per_identity):
    if path.suffix == ".rec" or (path / REC_NAME).is_file():
        dataset = open_insightface_dataset(path)
        names = dataset.class_names() or {}
        if dataset.header is not None:
            ranges = dataset.identity_ranges()
            members = [np.arange(a - 1, b - 1) for a, b in ranges]
        else:
            labels = dataset.labels()
            members = [np.flatnonzero(labels == c) for c in range(dataset.num_classes)]
    else:
        dataset = open_image_folders(path)
        names = dict(enumerate(dataset.class_names))
        members = [np.flatnonzero(dataset.image_labels == c) for c in range(dataset.num_classes)]
    chosen = np.unique(np.linspace(0, dataset.num_classes - 1, identities).round().astype(int))
    rows, titles = [], []
    for label in chosen:
        positions = members[label][:images_per_identity]
        if len(positions) == 0:
            continue
        rows.append([dataset.decode_example(int(p))[0] for p in positions])
        name = names.get(int(label))
        titles.append(f"{label}: {name}\n({len(members[label])} images)" if name
                      else f"class {label}\n({len(members[label])} images)")
    if hasattr(dataset, "close"):
        dataset.close()
    return rows, titles
