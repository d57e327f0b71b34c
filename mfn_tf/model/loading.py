"""Load a MobileFaceNet backbone from the files this project writes."""

import zipfile
from pathlib import Path

BACKBONE_NAME = "mobilefacenet"


class ModelLoadError(ValueError):
    """A model file that cannot be loaded as a MobileFaceNet backbone."""


def get_backbone(model):
    """Return the embedding backbone inside `model`.

    `model` is either the backbone itself (one image input, one embedding
    output) or a training model that nests it under the name "mobilefacenet"
    next to a margin head.
    """
    for layer in model.layers:
        if layer.name == BACKBONE_NAME and hasattr(layer, "layers"):
            return layer
    if len(model.inputs) == 1 and len(model.outputs) == 1:
        return model
    raise ModelLoadError(
        f"model {model.name!r} has no nested {BACKBONE_NAME!r} backbone and "
        f"is not itself a backbone ({len(model.inputs)} inputs, "
        f"{len(model.outputs)} outputs)"
    )


def load_backbone(path):
    """Load the backbone from a `.keras` file of a backbone or training model,
    or import it from an insightface MXNet checkpoint given as "PREFIX,EPOCH".

    Raises:
        FileNotFoundError: `path` (or the checkpoint's files) does not exist.
        ModelLoadError: the file is not a Keras model or holds no backbone,
            or the checkpoint is not an importable MobileFaceNet.
    """
    import keras

    # Registers the project's custom layers with Keras' deserializer.
    import mfn_tf.heads  # noqa: F401
    import mfn_tf.model.batch_norm  # noqa: F401
    from mfn_tf.importers.mxnet_checkpoint import is_checkpoint_spec

    if is_checkpoint_spec(path):
        return _import_mxnet_backbone(path)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix != ".keras":
        raise ModelLoadError(
            f"{path}: expected a .keras file written by this project. For an "
            "insightface MXNet checkpoint, run `python cli.py import-mxnet "
            "PREFIX,EPOCH --out MODEL.keras` first."
        )
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path} is not a Keras model file: a .keras file is a zip archive, and "
            "this one is not (truncated, or another format renamed to .keras)"
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{path}: cannot load the Keras model: {error}") from error
    return get_backbone(model)


def _import_mxnet_backbone(spec):
    from mfn_tf.importers import (
        MXNetImportError,
        NDArrayFileError,
        SymbolError,
        import_mxnet_checkpoint,
        parse_checkpoint_spec,
    )

    prefix, epoch = parse_checkpoint_spec(spec)
    try:
        backbone, _, _ = import_mxnet_checkpoint(prefix, epoch)
    except (MXNetImportError, NDArrayFileError, SymbolError) as error:
        raise ModelLoadError(str(error)) from error
    return backbone
