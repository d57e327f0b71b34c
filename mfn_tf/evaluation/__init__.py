"""Verification (insightface's Accuracy-Flip protocol), ROC plots and the
training callback.

Names are imported lazily: `verification` is pure numpy, and only the
embedding and the callback load TensorFlow.
"""

import importlib

# public name: module that defines it
_EXPORTS = {
    "verification_accuracy": "mfn_tf.evaluation.verification",
    "tar_at_far": "mfn_tf.evaluation.verification",
    "roc_curve": "mfn_tf.evaluation.verification",
    "Embeddings": "mfn_tf.evaluation.embedding",
    "ImageEmbedder": "mfn_tf.evaluation.embedding",
    "embed_images": "mfn_tf.evaluation.embedding",
    "VerificationResult": "mfn_tf.evaluation.evaluate",
    "VerificationSet": "mfn_tf.evaluation.evaluate",
    "evaluate_bin": "mfn_tf.evaluation.evaluate",
    "load_verification_set": "mfn_tf.evaluation.evaluate",
    "save_roc_plot": "mfn_tf.evaluation.plots",
    "VerificationCallback": "mfn_tf.evaluation.callback",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mfn_tf.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
