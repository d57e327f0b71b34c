"""Importers of weights trained elsewhere: insightface MXNet checkpoints.

Only numpy is needed to read them; TensorFlow loads when the model is built.
"""

from mfn_tf.importers.mxnet_checkpoint import (
    checkpoint_paths,
    is_checkpoint_spec,
    parse_checkpoint_spec,
)
from mfn_tf.importers.mxnet_mobilefacenet import (
    MXNetImportError,
    MXNetImportInfo,
    import_mxnet_checkpoint,
)
from mfn_tf.importers.mxnet_ndarray import NDArrayFileError, load_ndarrays, save_ndarrays
from mfn_tf.importers.mxnet_symbol import MXNetSymbol, SymbolError

__all__ = [
    "MXNetImportError",
    "MXNetImportInfo",
    "MXNetSymbol",
    "NDArrayFileError",
    "SymbolError",
    "checkpoint_paths",
    "import_mxnet_checkpoint",
    "is_checkpoint_spec",
    "load_ndarrays",
    "parse_checkpoint_spec",
    "save_ndarrays",
]
