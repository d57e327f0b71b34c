"""Momentum SGD with MXNet's coupled weight decay.

MXNet's `SGD` optimizer, which insightface trains with, adds the decay to
the gradient inside the momentum update (its `sgd_mom_update` operator):

    v = momentum * v - lr * (g + wd * w)
    w = w + v

Keras' `weight_decay` argument instead shrinks the weights outside the
momentum update (`w -= lr * wd * w`, decoupled as in AdamW), so the decay
never accumulates in the velocity. Through momentum 0.9, the coupled decay
settles at lr * wd / (1 - 0.9) per step, ten times the decoupled lr * wd,
so insightface's wd = 4e-5 would mean something else in Keras. `MXNetSGD`
implements MXNet's rule with a coefficient `wd * wd_mult` per variable.
"""

import keras
from keras import ops

DEFAULT_MOMENTUM = 0.9  # insightface's --mom


def unwrap_optimizer(optimizer):
    """Return the optimizer inside a `LossScaleOptimizer`, or `optimizer` itself.

    `Model.compile` wraps the optimizer in a `LossScaleOptimizer` under the
    `mixed_float16` policy.
    """
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


@keras.saving.register_keras_serializable(package="mfn_tf")
class MXNetSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with MXNet's weight decay added to the gradient.

    Args:
        learning_rate: the initial learning rate. `StepLearningRate` sets
            it before each step.
        momentum: momentum of the velocity, 0.9 as in insightface.
        weight_decay_coefficients: mapping from variable path (such as
            `"stem_conv/kernel"` or `"fc7/kernel"`) to `wd * wd_mult`.
            Variables not in the mapping do not decay. `resolve_weight_decay`
            computes it from a model; `set_weight_decay` replaces it.
        **kwargs: other `keras.optimizers.Optimizer` arguments, except
            `weight_decay` (decoupled, see the module docstring) and
            `nesterov=True` (MXNet's SGD has no Nesterov momentum).
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=DEFAULT_MOMENTUM,
        weight_decay_coefficients=None,
        name="mxnet_sgd",
        **kwargs,
    ):
        if kwargs.get("weight_decay") is not None:
            raise ValueError(
                "MXNetSGD does not take Keras' decoupled `weight_decay`. Pass "
                "`weight_decay_coefficients` ({variable path: wd * wd_mult}) or "
                "use the WeightDecayMultipliers callback. "
                f"Received: weight_decay={kwargs['weight_decay']!r}"
            )
        if kwargs.get("nesterov"):
            raise ValueError(
                "MXNetSGD implements MXNet's plain momentum SGD, which has no "
                "Nesterov variant. Received: nesterov=True"
            )
        super().__init__(
            learning_rate=learning_rate,
            momentum=float(momentum),
            name=name,
            **kwargs,
        )
        self._decay_by_path = {}
        self._variable_paths = None
        # The decay of each variable is a Python constant in the traced
        # train function, so a later change must not pass unnoticed.
        self._traced_decay_by_path = None
        self.set_weight_decay(weight_decay_coefficients or {})

    @property
    def weight_decay_coefficients(self):
        """Mapping from variable path to its coefficient `wd * wd_mult` (a copy)."""
        return dict(self._decay_by_path)

    def set_weight_decay(self, coefficients):
        """Set the decay coefficient `wd * wd_mult` of each variable path.

        Call it before the first training step: the coefficients are baked
        into the train function when TensorFlow traces it.

        Raises:
            ValueError: a coefficient is negative, or (once the optimizer is
                built) a path is not among the variables it trains.
            RuntimeError: the update step was already traced with other
                coefficients.
        """
        decay_by_path = {}
        for path, coefficient in dict(coefficients).items():
            coefficient = float(coefficient)
            if not coefficient >= 0.0:
                raise ValueError(
                    f"weight decay coefficient of {path!r} must be >= 0. "
                    f"Received: {coefficient!r}"
                )
            if coefficient > 0.0:
                decay_by_path[str(path)] = coefficient
        if (
            self._traced_decay_by_path is not None
            and decay_by_path != self._traced_decay_by_path
        ):
            raise RuntimeError(
                "MXNetSGD's update step was already traced with other weight "
                "decay coefficients, which a traced train function keeps. Set "
                "them before the first training step, or compile the model "
                "again with a new MXNetSGD."
            )
        if self._variable_paths is not None:
            self._check_paths(decay_by_path)
        self._decay_by_path = decay_by_path

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._variable_paths = [_variable_path(variable) for variable in variables]
        self._check_paths(self._decay_by_path)

    def _check_paths(self, decay_by_path):
        unknown = sorted(set(decay_by_path) - set(self._variable_paths))
        if unknown:
            listed = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise ValueError(
                f"weight decay is set for {len(unknown)} variable path(s) that "
                f"this optimizer does not train: {listed}. It trains "
                f"{len(self._variable_paths)} variables, such as "
                f"{self._variable_paths[0]!r}. Resolve the coefficients from "
                "the model being trained (resolve_weight_decay)."
            )

    def update_step(self, gradient, variable, learning_rate):
        if self._traced_decay_by_path is None and not _executing_eagerly():
            self._traced_decay_by_path = dict(self._decay_by_path)
        path = self._variable_paths[self._get_variable_index(variable)]
        coefficient = self._decay_by_path.get(path)
        if coefficient is not None:
            gradient = ops.add(
                ops.cast(gradient, variable.dtype),
                ops.multiply(ops.cast(coefficient, variable.dtype), variable),
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["weight_decay_coefficients"] = dict(self._decay_by_path)
        return config


def _variable_path(variable):
    # Keras variables have a path such as "stem_conv/kernel", tf.Variables a name.
    return getattr(variable, "path", None) or variable.name


def _executing_eagerly():
    import tensorflow as tf

    return tf.executing_eagerly()
