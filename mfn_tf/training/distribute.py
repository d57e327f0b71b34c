"""The `tf.distribute` strategy a training run uses."""

import logging

import tensorflow as tf

logger = logging.getLogger(__name__)


def make_strategy(mode="auto"):
    """Pick the strategy for `mode`.

    - "auto": `MirroredStrategy` over all GPUs when more than one is visible,
      else the default single-device strategy.
    - "mirrored": `MirroredStrategy` over all GPUs, or over all logical CPU
      devices when there is no GPU (how the tests run it on one machine).
    - "none": the default strategy.

    insightface gives each device `per_device_batch` images, so the global
    batch is `per_device_batch * strategy.num_replicas_in_sync`.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if mode == "none" or (mode == "auto" and len(gpus) < 2):
        strategy = tf.distribute.get_strategy()
    elif mode in ("auto", "mirrored"):
        devices = [device.name for device in gpus] or [
            device.name for device in tf.config.list_logical_devices("CPU")
        ]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:
        raise ValueError(f"unknown distribute mode {mode!r}; expected auto, mirrored or none")
    logger.info(
        "Strategy %s with %d replica(s)",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    return strategy
