"""`python cli.py data ...`: pack, inspect, index and generate datasets.

None of these commands imports TensorFlow.
"""

import functools
from pathlib import Path

import click

from mfn_tf.data.errors import DatasetError
from mfn_tf.data.images import JPEG_QUALITY
from mfn_tf.data.lfw import SPHEREFACE_TO_INSIGHTFACE_SHIFT_X


def _report_dataset_errors(command):
    """Show a `DatasetError` as a one-paragraph CLI error, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (DatasetError, FileNotFoundError) as error:
            raise click.ClickException(str(error)) from error

    return wrapper


@click.group()
def data():
    """Pack, inspect and generate datasets in insightface's formats."""


_SHIFT_HELP = (
    "Shift image content right by this many pixels (left when negative), "
    "repeating the edge column; shifted images are re-encoded as JPEG "
    f"quality {JPEG_QUALITY}. Use {SPHEREFACE_TO_INSIGHTFACE_SHIFT_X} for LFW "
    "crops aligned to the SphereFace 96x112 template, to move them onto "
    "insightface's 112x112 alignment."
)


@data.command("pack-rec")
@click.argument("images", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder that receives train.rec, train.idx, property and labels.txt.")
@click.option("--include", help="Identities to keep: a file with one name per line, or a comma list.")
@click.option("--exclude", help="Identities to drop: a file with one name per line, or a comma list.")
@click.option("--min-images", type=click.IntRange(min=1), default=1, show_default=True,
              help="Drop identities with fewer images.")
@click.option("--exclude-pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An LFW-style pairs.txt: drop every identity that appears in its "
                   "pairs (of --exclude-folds), to keep a verification set disjoint.")
@click.option("--exclude-folds", help="1-based folds of --exclude-pairs, such as 6-10 (default: all).")
@click.option("--shift-x", type=int, default=0, show_default=True, help=_SHIFT_HELP)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset in --out.")
@_report_dataset_errors
def pack_rec(images, out_dir, include, exclude, min_images, exclude_pairs, exclude_folds,
             shift_x, overwrite):
    """Pack IMAGES (one sub-folder of aligned 112x112 faces per identity)
    into an insightface training set."""
    from mfn_tf.data.lfw import names_in_folds, parse_folds, read_pairs
    from mfn_tf.data.packing import pack_rec as pack, parse_identity_list

    excluded = set(parse_identity_list(exclude) or [])
    if exclude_folds and not exclude_pairs:
        raise click.UsageError("--exclude-folds needs --exclude-pairs")
    if exclude_pairs:
        pairs = read_pairs(exclude_pairs)
        num_folds = max(pair.fold for pair in pairs)
        folds = parse_folds(exclude_folds, num_folds) if exclude_folds else set(range(1, num_folds + 1))
        in_pairs = names_in_folds(pairs, folds)
        click.echo(f"excluding {len(in_pairs)} identities that appear in folds "
                   f"{_format_folds(folds)} of {exclude_pairs}")
        excluded |= in_pairs
    identities, count = pack(
        images, out_dir, include=parse_identity_list(include), exclude=excluded,
        min_images=min_images, shift=shift_x, overwrite=overwrite,
    )
    click.echo(f"wrote {count} images of {identities} identities to {out_dir}")


@data.command("pack-bin")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("images", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The verification .bin to write.")
@click.option("--folds", help="1-based folds to keep, such as 6-10 or 1,3 (default: all).")
@click.option("--shift-x", type=int, default=0, show_default=True, help=_SHIFT_HELP)
@click.option("--overwrite", is_flag=True, help="Replace an existing .bin.")
@_report_dataset_errors
def pack_bin(pairs, images, out_path, folds, shift_x, overwrite):
    """Pack the pairs of PAIRS (LFW's pairs.txt format) with the images in
    IMAGES (Name/Name_0001.jpg) into an insightface verification .bin."""
    from mfn_tf.data.lfw import pack_bin as pack, parse_folds

    selected = parse_folds(folds) if folds else None
    count = pack(pairs, images, out_path, folds=selected, shift=shift_x, overwrite=overwrite)
    click.echo(f"wrote {count} pairs to {out_path}")


@data.command("inspect")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--sample", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Number of random images whose format and size are checked.")
@click.option("--all", "check_all", is_flag=True, help="Check every image instead of a sample.")
@click.option("--decode", is_flag=True, help="Decode the checked images fully (finds corrupt image data).")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a contact-sheet PNG of a few identities (or pairs of a .bin).")
@click.option("--identities", type=click.IntRange(min=1), default=8, show_default=True,
              help="Rows of the contact sheet.")
@_report_dataset_errors
def inspect(path, sample, check_all, decode, sheet, identities):
    """Summarize PATH: a dataset folder (train.rec), a .rec, image folders or a .bin."""
    from mfn_tf.data.inspection import summarize, write_contact_sheet

    summary = summarize(path, sample=None if check_all else sample, decode=decode)
    for line in summary.lines():
        click.echo(line)
    if sheet:
        write_contact_sheet(path, sheet, identities=identities)
        click.echo(f"wrote contact sheet {sheet}")


@data.command("synth")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder that receives train.rec, train.idx, property, labels.txt and synth.bin.")
@click.option("--classes", type=int, default=64, show_default=True, help="Training identities.")
@click.option("--images-per-class", type=int, default=24, show_default=True,
              help="Images of each training identity.")
@click.option("--verification-classes", type=int, default=20, show_default=True,
              help="Held-out identities of synth.bin, disjoint from the training ones.")
@click.option("--verification-images-per-class", type=int, default=10, show_default=True,
              help="Images of each held-out identity that pairs are drawn from.")
@click.option("--pairs", type=int, default=300, show_default=True,
              help="Verification pairs, alternately same and different.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed; the same seed gives byte-identical files.")
@click.option("--overwrite", is_flag=True, help="Replace existing files in --out.")
@_report_dataset_errors
def synth(out_dir, classes, images_per_class, verification_classes,
          verification_images_per_class, pairs, seed, overwrite):
    """Generate a small synthetic insightface dataset and verification .bin."""
    from mfn_tf.data.synthetic import SyntheticConfig, write_synthetic_dataset

    config = SyntheticConfig(
        classes=classes,
        images_per_class=images_per_class,
        verification_classes=verification_classes,
        verification_images_per_class=verification_images_per_class,
        pairs=pairs,
        seed=seed,
    )
    _, bin_path = write_synthetic_dataset(out_dir, config, overwrite=overwrite)
    click.echo(f"wrote {classes * images_per_class} training images to {out_dir} "
               f"and {pairs} verification pairs to {bin_path}")


@data.command("reindex")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing .idx.")
@_report_dataset_errors
def reindex(dataset, overwrite):
    """Rebuild the .idx of DATASET (a folder with train.rec, or a .rec) by
    reading every record; keys become 0, 1, 2, ... in file order."""
    from mfn_tf.data.insightface_dataset import IDX_NAME, REC_NAME
    from mfn_tf.data.recordio import rebuild_index

    if dataset.suffix == ".rec":
        rec_path, idx_path = dataset, dataset.with_suffix(".idx")
    else:
        rec_path, idx_path = dataset / REC_NAME, dataset / IDX_NAME
    if idx_path.exists() and not overwrite:
        raise click.ClickException(f"{idx_path} already exists; pass --overwrite to replace it")
    count = rebuild_index(rec_path, idx_path)
    click.echo(f"indexed {count} records of {rec_path} in {idx_path}")


def _format_folds(folds):
    return ",".join(str(fold) for fold in sorted(folds))
