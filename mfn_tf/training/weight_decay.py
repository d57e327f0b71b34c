"""Weight-decay groups under MXNet's rule: the variables that decay, and by how much.

MXNet's optimizer decays a parameter only if its name ends in `_weight` or
`_gamma` (`Optimizer.set_wd_mult` in MXNet 1.x). In insightface's
MobileFaceNet that means convolution and dense kernels, BatchNorm gammas
and PReLU slopes, which MXNet's `LeakyReLU(act_type="prelu")` also names
`gamma`. Biases, BatchNorm betas and the moving statistics do not decay.
The Keras names of those roles:

    kernel, depthwise_kernel, pointwise_kernel, embeddings   decay (weight)
    gamma (BatchNorm)                                         decay
    alpha (PReLU)                                             decay
    bias, beta                                                no decay

Each decayed variable gets the coefficient `wd * mult`, where `mult` comes
from the longest layer-name prefix in `multipliers` (1 if none matches).
insightface trains MobileFaceNet with wd = 4e-5 and `fc7_wd_mult` 10. The
MobileFaceNet paper instead gives 10x decay (4e-4) to the layers after the
global depthwise convolution, which here are the `embedding_*` layers.
"""

import collections
import logging
import math

import keras

from mfn_tf.training.optimizer import MXNetSGD, unwrap_optimizer

logger = logging.getLogger(__name__)

FC7_PREFIX = "fc7"
# Layers after the global depthwise convolution (gdc_conv, gdc_bn):
# embedding_dense or embedding_conv, and embedding_bn.
AFTER_GDC_PREFIX = "embedding_"

# Keras variable name: (role, decays under MXNet's rule).
_ROLES = {
    "kernel": ("kernel", True),
    "depthwise_kernel": ("kernel", True),
    "pointwise_kernel": ("kernel", True),
    "embeddings": ("kernel", True),
    "gamma": ("BatchNorm gamma", True),
    "alpha": ("PReLU alpha", True),
    "bias": ("bias", False),
    "beta": ("BatchNorm beta", False),
}
_NO_PREFIX = "body"

WeightDecayEntry = collections.namedtuple(
    "WeightDecayEntry",
    ["path", "shape", "role", "scope", "multiplier", "coefficient"],
)
WeightDecayEntry.__doc__ = """One trainable variable and its decay.

`role` is the variable's kind ("kernel", "BatchNorm gamma", ...), `scope`
the multiplier prefix its layer matched ("body" if none), and
`coefficient` is `wd * multiplier` for decayed roles and 0 otherwise.
"""


def _iter_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _iter_layers(layer)
        else:
            yield layer


def _match_prefix(layer_name, prefixes):
    matches = [prefix for prefix in prefixes if layer_name.startswith(prefix)]
    return max(matches, key=len) if matches else None


def resolve_weight_decay(model, wd, multipliers=None):
    """List every trainable variable of `model` with its MXNet weight decay.

    Nested models (a training model with the backbone inside) are searched
    layer by layer.

    Args:
        model: a built Keras model.
        wd: the base weight decay, such as 4e-5.
        multipliers: mapping from layer-name prefix to multiplier, such as
            `{"fc7": 10}`. The longest matching prefix applies.

    Returns:
        A list of `WeightDecayEntry`, one per trainable variable.

    Raises:
        ValueError: `wd` or a multiplier is negative, a prefix matches no
            layer with trainable variables, a variable name has no known
            role, or two variables share a path.
    """
    multipliers = dict(multipliers or {})
    if not wd >= 0:
        raise ValueError(f"`wd` must be >= 0. Received: wd={wd!r}")
    for prefix, multiplier in multipliers.items():
        if not multiplier >= 0:
            raise ValueError(
                f"weight decay multiplier of {prefix!r} must be >= 0. "
                f"Received: {multiplier!r}"
            )

    entries = []
    matched_prefixes = set()
    for layer in _iter_layers(model):
        if not layer.trainable_weights:
            continue
        prefix = _match_prefix(layer.name, multipliers)
        if prefix is not None:
            matched_prefixes.add(prefix)
        multiplier = float(multipliers[prefix]) if prefix is not None else 1.0
        for variable in layer.trainable_weights:
            name = variable.path.rsplit("/", 1)[-1]
            if name not in _ROLES:
                raise ValueError(
                    f"cannot tell whether {variable.path!r} (layer "
                    f"{type(layer).__name__}) decays under MXNet's rule, which "
                    f"decays weights and gammas only. Known variable names: "
                    f"{', '.join(sorted(_ROLES))}."
                )
            role, decays = _ROLES[name]
            entries.append(
                WeightDecayEntry(
                    path=variable.path,
                    shape=tuple(variable.shape),
                    role=role,
                    scope=prefix if prefix is not None else _NO_PREFIX,
                    multiplier=multiplier,
                    coefficient=wd * multiplier if decays else 0.0,
                )
            )

    resolved = {entry.path for entry in entries}
    missed = [v.path for v in model.trainable_variables if v.path not in resolved]
    if missed:
        raise ValueError(
            f"trainable variable(s) {missed[:5]} of model {model.name!r} belong "
            "to no layer, so their weight decay role is unknown. Create them "
            "in a layer."
        )
    unmatched = sorted(set(multipliers) - matched_prefixes)
    if unmatched:
        raise ValueError(
            f"weight decay multiplier prefix(es) {unmatched} match no layer "
            f"with trainable variables in model {model.name!r}."
        )
    paths = collections.Counter(entry.path for entry in entries)
    duplicates = sorted(path for path, count in paths.items() if count > 1)
    if duplicates:
        raise ValueError(
            f"variable path(s) {duplicates[:5]} occur more than once in model "
            f"{model.name!r}, so their weight decay cannot be told apart. "
            "Give the layers unique names."
        )
    return entries


def decay_coefficients(entries):
    """Return `{path: coefficient}` of the entries that decay, for `MXNetSGD`."""
    return {entry.path: entry.coefficient for entry in entries if entry.coefficient > 0}


def format_weight_decay_table(entries):
    """Format the entries as a table with one row per (scope, role) group."""
    groups = {}
    for entry in entries:
        key = (entry.scope, entry.role, entry.coefficient)
        tensors, values = groups.get(key, (0, 0))
        groups[key] = (tensors + 1, values + math.prod(entry.shape))

    lines = [f"{'group':<28} {'tensors':>7} {'values':>10} {'coefficient':>11}"]
    for (scope, role, coefficient), (tensors, values) in groups.items():
        if scope != _NO_PREFIX:
            scope += "*"  # a layer-name prefix
        lines.append(
            f"{scope + ' ' + role:<28} {tensors:>7} {values:>10,} {coefficient:>11.3g}"
        )
    return "\n".join(lines)


class WeightDecayMultipliers(keras.callbacks.Callback):
    """Install MXNet's weight decay on the model's `MXNetSGD` when training starts.

    At `on_train_begin`, before the train function is first traced, it
    resolves the decay of every trainable variable of the model being
    fitted (`resolve_weight_decay`), sets the coefficients on its
    optimizer and logs the groups once.

    Args:
        wd: base weight decay of the body, 4e-5 in insightface's recipe.
        fc7_mult: multiplier of the `fc7` classifier (insightface's
            `fc7_wd_mult`, 10 in the MobileFaceNet recipe).
        after_gdc_mult: multiplier of the `embedding_*` layers after the
            global depthwise convolution. 10 is the MobileFaceNet paper's
            rule, 1 (the default) is insightface's.
    """

    def __init__(self, wd, fc7_mult=10.0, after_gdc_mult=1.0):
        super().__init__()
        self.wd = wd
        self.fc7_mult = fc7_mult
        self.after_gdc_mult = after_gdc_mult
        self.entries = None

    def multipliers(self):
        """Return the layer-prefix multipliers that differ from 1."""
        multipliers = {FC7_PREFIX: self.fc7_mult, AFTER_GDC_PREFIX: self.after_gdc_mult}
        return {prefix: mult for prefix, mult in multipliers.items() if mult != 1}

    def on_train_begin(self, logs=None):
        optimizer = unwrap_optimizer(self.model.optimizer)
        if not isinstance(optimizer, MXNetSGD):
            raise TypeError(
                "WeightDecayMultipliers needs the model compiled with "
                "mfn_tf.MXNetSGD, which adds the decay to the gradient as "
                f"MXNet does. Received optimizer: {type(optimizer).__name__}"
            )
        entries = resolve_weight_decay(self.model, self.wd, self.multipliers())
        optimizer.set_weight_decay(decay_coefficients(entries))
        if self.entries is None:
            logger.info(
                "weight decay added to the gradient (MXNet SGD), wd=%g:\n%s",
                self.wd,
                format_weight_decay_table(entries),
            )
        self.entries = entries

    def get_config(self):
        return {
            "wd": self.wd,
            "fc7_mult": self.fc7_mult,
            "after_gdc_mult": self.after_gdc_mult,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
