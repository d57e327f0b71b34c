"""VerificationCallback inside `model.fit`: logs, steps and config."""

import io
import logging

import keras
import numpy as np
import pytest
from PIL import Image

from mfn_tf.data.verification_bin import save_bin


def write_noise_bin(path, n_pairs, seed):
    """A `.bin` of random-noise PNG faces; "same" pairs hold one image twice."""
    rng = np.random.default_rng(seed)
    images, issame = [], []
    for index in range(n_pairs):
        same = index % 2 == 0
        first = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
        second = first if same else rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
        for image in (first, second):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            images.append(buffer.getvalue())
        issame.append(same)
    save_bin(path, images, issame)
    return path


class LogsRecorder(keras.callbacks.Callback):
    """Copies of the epoch logs as a callback placed after the verification
    receives them."""

    def __init__(self):
        super().__init__()
        self.epoch_logs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append(dict(logs))


@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bins")
    return {
        "lfw": write_noise_bin(directory / "lfw.bin", 10, seed=0),
        "agedb_30": write_noise_bin(directory / "agedb_30.bin", 10, seed=1),
    }


@pytest.fixture(scope="module")
def training_model():
    """A tiny backbone nested as "mobilefacenet" under a softmax classifier."""
    from mfn_tf.model.mobilefacenet import MobileFaceNet

    keras.utils.set_random_seed(0)
    backbone = MobileFaceNet(width_multiplier=0.25)
    images = keras.Input((112, 112, 3))
    logits = keras.layers.Dense(4, name="fc7")(backbone(images))
    model = keras.Model(images, logits, name="training_model")
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    return model


def fit(model, callbacks, epochs=2):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 112, 112, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 8)
    # 8 images in batches of 4: two steps per epoch.
    return model.fit(images, labels, batch_size=4, epochs=epochs, callbacks=callbacks, verbose=0)


def test_callback_writes_epoch_logs(training_model, bins, caplog):
    from mfn_tf.evaluation import VerificationCallback

    callback = VerificationCallback(bins, every_n_steps=1, batch_size=8)
    recorder = LogsRecorder()
    with caplog.at_level(logging.INFO, logger="mfn_tf.evaluation.callback"):
        start = int(training_model.optimizer.iterations.numpy())
        history = fit(training_model, [callback, recorder])

    # One evaluation per step; the epoch end reuses the one of its step.
    assert [record["step"] for record in callback.history] == [start + i for i in range(1, 5)]
    for logs in recorder.epoch_logs:
        for name in ("lfw", "agedb_30"):
            for figure in ("accuracy", "accuracy_std", "xnorm", "tar_at_far"):
                assert f"{name}_{figure}" in logs
    assert len(history.history["agedb_30_accuracy"]) == 2
    assert history.history["lfw_accuracy"][-1] == callback.results["lfw"].accuracy

    messages = [record.getMessage() for record in caplog.records]
    step = start + 2
    assert any(m.startswith(f"[lfw][{step}]Accuracy-Flip: ") for m in messages)
    assert any(m.startswith(f"[agedb_30][{step}]XNorm: ") for m in messages)
    assert any(m.startswith(f"[lfw][{step}]Accuracy-Highest: ") for m in messages)


def test_callback_bare_log_keys(training_model, bins):
    from mfn_tf.evaluation import VerificationCallback

    callback = VerificationCallback({"lfw": bins["lfw"]}, prefix_logs=False, verbose=0)
    history = fit(training_model, [callback], epochs=1)
    assert "accuracy" in history.history
    assert "lfw_accuracy" not in history.history


def test_callback_bare_keys_need_one_target(bins):
    from mfn_tf.evaluation import VerificationCallback

    with pytest.raises(ValueError, match="prefix_logs=False needs exactly one target, got 2"):
        VerificationCallback(bins, prefix_logs=False)


def test_callback_config_round_trip(bins):
    from mfn_tf.evaluation import VerificationCallback

    callback = VerificationCallback(bins, every_n_steps=500, batch_size=16, flip=False, verbose=0)
    config = callback.get_config()
    restored = VerificationCallback.from_config(config)
    assert restored.get_config() == config
    assert config["targets"] == {name: str(path) for name, path in bins.items()}
    assert config["every_n_steps"] == 500
    assert config["flip"] is False


def test_callback_missing_bin(tmp_path):
    from mfn_tf.evaluation import VerificationCallback

    with pytest.raises(FileNotFoundError):
        VerificationCallback({"lfw": tmp_path / "lfw.bin"})
