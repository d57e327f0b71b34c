"""LFW's `pairs.txt` protocol and packing it into a verification `.bin`.

`pairs.txt` starts with `folds<TAB>n`: `folds` sets (LFW has 10), each of
`n` same-identity pairs followed by `n` different-identity pairs. A same
pair is `Name<TAB>i<TAB>j`, a different pair `NameA<TAB>i<TAB>NameB<TAB>j`,
with 1-based image numbers: image `i` of `Name` is `Name/Name_{i:04d}.jpg`.
A header with a single number `n` (as in LFW's `pairsDevTrain.txt`) is one
set. LFW's folds are identity-disjoint: no person appears in two folds.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mfn_tf.data.errors import DatasetError
from mfn_tf.data.images import load_face
from mfn_tf.data.verification_bin import save_bin

logger = logging.getLogger(__name__)

# The aligned LFW crops that circulate with SphereFace-style pipelines put
# the face about 8 px left of insightface's 112x112 template (the 96x112
# SphereFace template without insightface's +8 px x offset). Shifting the
# content right by this much moves them onto insightface's alignment.
SPHEREFACE_TO_INSIGHTFACE_SHIFT_X = 8


@dataclass(frozen=True)
class Pair:
    """One line of `pairs.txt`; `fold` counts from 1."""

    fold: int
    name_a: str
    number_a: int
    name_b: str
    number_b: int
    issame: bool
    line_number: int

    def paths(self, root):
        root = Path(root)
        return (
            lfw_image_path(root, self.name_a, self.number_a),
            lfw_image_path(root, self.name_b, self.number_b),
        )


def lfw_image_path(root, name, number):
    return Path(root) / name / f"{name}_{number:04d}.jpg"


def read_pairs(path):
    """Parse `pairs.txt` into a list of `Pair` in file order.

    Raises:
        DatasetError: the header or a line is malformed, or the file has
            another number of lines than its header announces.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"pairs file {path} not found")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise DatasetError(f"{path} is empty; expected a `folds<TAB>pairs` header line")
    try:
        header = [int(value) for value in lines[0].split()]
        if len(header) == 1:
            header = [1, header[0]]
        num_folds, per_fold = header
        if num_folds < 1 or per_fold < 1:
            raise ValueError
    except ValueError:
        raise DatasetError(
            f"{path}:1: expected a header `folds<TAB>pairs per kind` such as "
            f"`10\t300`, got {lines[0]!r}"
        ) from None
    expected = num_folds * 2 * per_fold
    if len(lines) - 1 != expected:
        raise DatasetError(
            f"{path}: the header announces {num_folds} folds of {per_fold} same "
            f"and {per_fold} different pairs ({expected} lines), but the file "
            f"has {len(lines) - 1} pair lines"
        )
    pairs = []
    for offset, line in enumerate(lines[1:]):
        line_number = offset + 2
        fold = offset // (2 * per_fold) + 1
        fields = line.split()
        try:
            if len(fields) == 3:
                pair = Pair(fold, fields[0], int(fields[1]), fields[0], int(fields[2]), True, line_number)
            elif len(fields) == 4:
                pair = Pair(fold, fields[0], int(fields[1]), fields[2], int(fields[3]), False, line_number)
            else:
                raise ValueError
        except ValueError:
            raise DatasetError(
                f"{path}:{line_number}: expected `Name i j` or `NameA i NameB j`, "
                f"got {line!r}"
            ) from None
        pairs.append(pair)
    return pairs


def parse_folds(text, num_folds=None):
    """Parse a 1-based fold selection such as "6-10" or "1,3,5-7" into a set."""
    folds = set()
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(value) for value in part.split("-", 1))
            else:
                low = high = int(part)
            if low < 1 or high < low:
                raise ValueError
        except ValueError:
            raise DatasetError(
                f"invalid fold selection {text!r}: use 1-based numbers and "
                "ranges such as `6-10` or `1,3,5-7`"
            ) from None
        folds.update(range(low, high + 1))
    if num_folds is not None and max(folds) > num_folds:
        raise DatasetError(
            f"fold selection {text!r} names fold {max(folds)}, but the pairs "
            f"file has {num_folds} folds"
        )
    return folds


def names_in_folds(pairs, folds):
    """Return the identity names that appear in the pairs of `folds`."""
    names = set()
    for pair in pairs:
        if pair.fold in folds:
            names.update((pair.name_a, pair.name_b))
    return names


def interleave_same_and_different(pairs):
    """Order the pairs of each fold as same, different, same, different, ...

    insightface's verification splits a `.bin` into 10 contiguous folds. On
    all 6,000 LFW pairs those are LFW's own folds whatever the order inside
    each, so the accuracy is unchanged. On a subset of LFW's folds, the
    pairs.txt order (all same pairs, then all different ones) would make
    every contiguous fold all-same or all-different, and the per-fold
    figures (std, TAR@FAR) meaningless; interleaving keeps both kinds in
    every fold.
    """
    ordered = []
    for fold in sorted({pair.fold for pair in pairs}):
        same = [pair for pair in pairs if pair.fold == fold and pair.issame]
        different = [pair for pair in pairs if pair.fold == fold and not pair.issame]
        for index in range(max(len(same), len(different))):
            ordered += same[index:index + 1] + different[index:index + 1]
    return ordered


def pack_bin(pairs_path, images_root, out_path, folds=None, shift=0,
             image_size=(112, 112), overwrite=False, progress=True):
    """Pack the pairs of `pairs.txt` into an insightface verification `.bin`.

    Args:
        pairs_path: LFW-style `pairs.txt`.
        images_root: folder of `Name/Name_0001.jpg` images.
        out_path: the `.bin` to write.
        folds: a set of 1-based folds to keep (all when None). The pairs
            stay grouped by fold, same and different interleaved within
            each (`interleave_same_and_different`).
        shift: shift image content right by this many pixels (left when
            negative), edge-padding the opened columns; the images are then
            re-encoded as JPEG quality 95.
        overwrite: replace an existing `out_path`.

    Returns:
        The number of pairs written.
    """
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise DatasetError(f"{out_path} already exists; pass --overwrite to replace it")
    pairs = read_pairs(pairs_path)
    if folds is not None:
        num_folds = max(pair.fold for pair in pairs)
        unknown = sorted(fold for fold in folds if fold > num_folds)
        if unknown:
            raise DatasetError(
                f"{pairs_path} has {num_folds} folds; fold {unknown[0]} does not exist"
            )
        pairs = [pair for pair in pairs if pair.fold in folds]
    pairs = interleave_same_and_different(pairs)
    images, issame = [], []
    cache = {}
    for pair in tqdm(pairs, desc=f"packing {out_path.name}", unit="pair", disable=not progress):
        for path in pair.paths(images_root):
            if path not in cache:
                if not path.is_file():
                    raise DatasetError(
                        f"{pairs_path}:{pair.line_number}: image {path} not found"
                    )
                cache[path] = load_face(path, image_size, shift)
            images.append(cache[path])
        issame.append(pair.issame)
    save_bin(out_path, images, issame)
    logger.info("wrote %d pairs (%d same) to %s", len(issame), sum(issame), out_path)
    return len(issame)
