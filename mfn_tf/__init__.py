"""MobileFaceNet face recognition in Keras 3.

The public API is imported lazily, so that `import mfn_tf` and the
pure-Python data tools do not load TensorFlow until a model is needed.
"""

import importlib

__version__ = "0.1.0"

# public name: module that defines it
_EXPORTS = {
    # model
    "MobileFaceNet": "mfn_tf.model.mobilefacenet",
    "FusedBatchNormalization": "mfn_tf.model.batch_norm",
    "count_madds": "mfn_tf.model.mobilefacenet",
    "load_backbone": "mfn_tf.model.loading",
    # heads
    "SoftmaxHead": "mfn_tf.heads.layers",
    "ArcFace": "mfn_tf.heads.layers",
    "CosFace": "mfn_tf.heads.layers",
    "CombinedMargin": "mfn_tf.heads.layers",
    "arcface_logits": "mfn_tf.heads.margins",
    "cosface_logits": "mfn_tf.heads.margins",
    "combined_margin_logits": "mfn_tf.heads.margins",
    # training: optimizer, weight decay, learning rate
    "MXNetSGD": "mfn_tf.training.optimizer",
    "WeightDecayMultipliers": "mfn_tf.training.weight_decay",
    "resolve_weight_decay": "mfn_tf.training.weight_decay",
    "StepLearningRate": "mfn_tf.training.lr_schedule",
    "step_learning_rate": "mfn_tf.training.lr_schedule",
    # training: recipes and stages
    "load_recipe": "mfn_tf.training.recipe",
    "train_stage": "mfn_tf.training.trainer",
    "build_training_model": "mfn_tf.training.model_builder",
    # evaluation
    "VerificationCallback": "mfn_tf.evaluation.callback",
    "embed_images": "mfn_tf.evaluation.embedding",
    "evaluate_bin": "mfn_tf.evaluation.evaluate",
    "save_roc_plot": "mfn_tf.evaluation.plots",
    "verification_accuracy": "mfn_tf.evaluation.verification",
    # importers
    "import_mxnet_checkpoint": "mfn_tf.importers.mxnet_mobilefacenet",
    "load_ndarrays": "mfn_tf.importers.mxnet_ndarray",
    "save_ndarrays": "mfn_tf.importers.mxnet_ndarray",
    # data
    "load_bin": "mfn_tf.data.verification_bin",
    "save_bin": "mfn_tf.data.verification_bin",
    "DatasetError": "mfn_tf.data.errors",
    "RecordIOReader": "mfn_tf.data.recordio",
    "RecordIOWriter": "mfn_tf.data.recordio",
    "open_insightface_dataset": "mfn_tf.data.insightface_dataset",
    "open_image_folders": "mfn_tf.data.image_folders",
    "open_training_data": "mfn_tf.data.pipeline",
    "rec_dataset": "mfn_tf.data.pipeline",
    "folder_dataset": "mfn_tf.data.pipeline",
    "make_dataset": "mfn_tf.data.pipeline",
    "write_synthetic_dataset": "mfn_tf.data.synthetic",
    # conversion to TFLite, ONNX and ncnn (the `converters` package beside mfn_tf)
    "convert_model": "converters.convert",
    "ConvertOptions": "converters.options",
    "fold_batchnorm": "converters.fold_batchnorm",
    # benchmarks of converted models (the `bench` package beside mfn_tf)
    "run_host_benchmark": "bench.host",
    "run_android_benchmark": "bench.android",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mfn_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
