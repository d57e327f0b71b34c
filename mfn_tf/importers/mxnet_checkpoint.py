"""insightface checkpoint names: `PREFIX,EPOCH` and the files it stands for.

`mx.model.save_checkpoint(prefix, epoch, ...)` writes `PREFIX-symbol.json`
and `PREFIX-%04d.params`, and insightface's `--pretrained` takes the pair as
one string `PREFIX,EPOCH`. This module needs neither MXNet nor TensorFlow.
"""

from pathlib import Path


def parse_checkpoint_spec(spec):
    """Split "PREFIX,EPOCH" into `(prefix, epoch)`.

    Raises:
        ValueError: `spec` has no comma or the epoch is not a non-negative
            integer.
    """
    prefix, comma, epoch = str(spec).rpartition(",")
    if not comma or not prefix:
        raise ValueError(
            f"expected an MXNet checkpoint as PREFIX,EPOCH (for example "
            f"models/model-y1,0 for models/model-y1-0000.params), got {spec!r}"
        )
    if not epoch.strip().isdigit():
        raise ValueError(
            f"the epoch in {spec!r} must be a non-negative integer, as in "
            f"{prefix},0; got {epoch!r}"
        )
    return prefix, int(epoch)


def is_checkpoint_spec(spec):
    """Return whether `spec` reads as PREFIX,EPOCH and names no existing file."""
    if Path(spec).exists():
        return False
    try:
        parse_checkpoint_spec(spec)
    except ValueError:
        return False
    return True


def checkpoint_paths(prefix, epoch):
    """Return the symbol and params paths of checkpoint `prefix` at `epoch`."""
    prefix = str(prefix)
    return Path(f"{prefix}-symbol.json"), Path(f"{prefix}-{int(epoch):04d}.params")
