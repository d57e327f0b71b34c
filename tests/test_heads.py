"""Head layers: logits against numpy, configs, float32 under mixed precision,
and the fc7 kernel carried from softmax pretraining into ArcFace."""

import math

import keras
import numpy as np
import pytest

from mfn_tf.heads import ArcFace, CombinedMargin, CosFace, SoftmaxHead
from mfn_tf.model.loading import load_backbone
from mfn_tf.model.mobilefacenet import MobileFaceNet

NUM_CLASSES = 6
EMBEDDING_SIZE = 8

HEADS = {
    "softmax": lambda: SoftmaxHead(NUM_CLASSES, name="fc7"),
    "arcface": lambda: ArcFace(
        NUM_CLASSES, s=32.0, m=0.4, easy_margin=True, name="fc7"
    ),
    "cosface": lambda: CosFace(NUM_CLASSES, s=30.0, m=0.3, name="fc7"),
    "combined": lambda: CombinedMargin(
        NUM_CLASSES, s=64.0, m1=1.0, m2=0.3, m3=0.2, name="fc7"
    ),
}


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(4, EMBEDDING_SIZE)).astype(np.float32)
    label = np.array([0, 3, 5, 3], np.int32)
    return embedding, label


@pytest.fixture
def restore_policy():
    previous = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(previous)


def numpy_cosines(embedding, kernel):
    embedding = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
    kernel = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    return embedding @ kernel


def test_softmax_head_is_plain_matmul(batch):
    embedding, label = batch
    head = SoftmaxHead(NUM_CLASSES)
    logits = keras.ops.convert_to_numpy(head([embedding, label]))
    np.testing.assert_allclose(
        logits, embedding @ head.kernel.numpy(), rtol=1e-5, atol=1e-6
    )


def test_arcface_head_matches_numpy(batch):
    embedding, label = batch
    head = ArcFace(NUM_CLASSES, s=64.0, m=0.5)
    logits = keras.ops.convert_to_numpy(head([embedding, label]))

    cos_theta = numpy_cosines(embedding, head.kernel.numpy())
    expected = 64.0 * cos_theta
    for row, target in enumerate(label):
        theta = math.acos(cos_theta[row, target])
        if cos_theta[row, target] > math.cos(math.pi - 0.5):
            expected[row, target] = 64.0 * math.cos(theta + 0.5)
        else:
            expected[row, target] = 64.0 * (
                cos_theta[row, target] - 0.5 * math.sin(0.5)
            )
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_cosface_head_matches_numpy(batch):
    embedding, label = batch
    head = CosFace(NUM_CLASSES, s=30.0, m=0.35)
    logits = keras.ops.convert_to_numpy(head([embedding, label]))
    expected = 30.0 * (
        numpy_cosines(embedding, head.kernel.numpy())
        - 0.35 * np.eye(NUM_CLASSES)[label]
    )
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_kernel_shape_and_initializer():
    head = ArcFace(1000, name="fc7")
    head.build([(None, 128), (None,)])
    assert head.kernel.path == "fc7/kernel"
    assert tuple(head.kernel.shape) == (128, 1000)
    assert np.std(head.kernel.numpy()) == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_accepts_column_labels(name, batch):
    embedding, label = batch
    head = HEADS[name]()
    flat = keras.ops.convert_to_numpy(head([embedding, label]))
    column = keras.ops.convert_to_numpy(head([embedding, label.reshape(-1, 1)]))
    assert flat.shape == (4, NUM_CLASSES)
    np.testing.assert_array_equal(flat, column)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_config_round_trip(name, batch):
    embedding, label = batch
    head = HEADS[name]()
    logits = keras.ops.convert_to_numpy(head([embedding, label]))

    config = head.get_config()
    clone = type(head).from_config(config)
    assert clone.get_config() == config
    clone([embedding, label])
    clone.set_weights(head.get_weights())
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(clone([embedding, label])), logits
    )


@pytest.mark.parametrize(
    "make_head, message",
    [
        (lambda: SoftmaxHead(1), "num_classes"),
        (lambda: ArcFace(10, s=0.0), "scale"),
        (lambda: ArcFace(10, m=1.6), r"\[0, pi / 2\)"),
        (lambda: CosFace(10, m=-0.1), "CosFace margin"),
        (lambda: CombinedMargin(10, m1=0.0), "m1 > 0"),
        (lambda: ArcFace(10, dtype="mixed_float16"), "float32"),
    ],
)
def test_head_rejects_invalid_argument(make_head, message):
    with pytest.raises(ValueError, match=message):
        make_head()


def test_head_rejects_embedding_without_label(batch):
    embedding, _ = batch
    with pytest.raises(ValueError, match=r"\[embedding, label\]"):
        ArcFace(NUM_CLASSES)(embedding)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_logits_float32_under_mixed_precision(policy, batch, restore_policy):
    keras.mixed_precision.set_global_policy(policy)
    embedding, label = batch
    image = keras.Input((EMBEDDING_SIZE,))
    label_input = keras.Input((), dtype="int32")
    features = keras.layers.Dense(EMBEDDING_SIZE, name="features")(image)
    head = ArcFace(NUM_CLASSES, name="fc7")
    logits = head([features, label_input])
    model = keras.Model([image, label_input], logits)

    assert features.dtype == policy.removeprefix("mixed_")
    assert head.compute_dtype == "float32"
    assert head.kernel.dtype == "float32"
    output = model([embedding, label])
    assert keras.backend.standardize_dtype(output.dtype) == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(output)))


def tiny_training_model(head):
    backbone = MobileFaceNet(
        embedding_size=16, width_multiplier=0.25, name="mobilefacenet"
    )
    image = keras.Input((112, 112, 3), name="image")
    label = keras.Input((), dtype="int32", name="label")
    logits = head([backbone(image), label])
    return keras.Model([image, label], logits, name="mobilefacenet_train")


def test_softmax_fc7_loads_into_arcface(tmp_path):
    # Stage 2 starts from stage 1's checkpoint: the softmax fc7 kernel
    # becomes ArcFace's class centres, as the trainer assigns it.
    softmax_model = tiny_training_model(SoftmaxHead(NUM_CLASSES, name="fc7"))
    path = tmp_path / "softmax.keras"
    softmax_model.save(path)
    softmax_kernel = (
        keras.models.load_model(path, compile=False).get_layer("fc7").kernel
    )

    arcface = ArcFace(NUM_CLASSES, s=64.0, m=0.5, name="fc7")
    arcface_model = tiny_training_model(arcface)
    assert arcface.kernel.path == softmax_kernel.path == "fc7/kernel"
    assert arcface.kernel.shape == softmax_kernel.shape
    arcface.kernel.assign(softmax_kernel)
    np.testing.assert_array_equal(
        arcface_model.get_layer("fc7").kernel.numpy(),
        softmax_model.get_layer("fc7").kernel.numpy(),
    )

    embedding = np.random.default_rng(2).normal(size=(3, 16)).astype(np.float32)
    no_target = np.full((3,), -1, np.int32)  # one_hot(-1) is all zeros: no margin
    logits = keras.ops.convert_to_numpy(arcface([embedding, no_target]))
    expected = 64.0 * numpy_cosines(embedding, softmax_kernel.numpy())
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_training_model_saves_and_reloads(tmp_path):
    model = tiny_training_model(CombinedMargin(NUM_CLASSES, m2=0.25, name="fc7"))
    path = tmp_path / "train.keras"
    model.save(path)

    reloaded = keras.models.load_model(path, compile=False)
    head = reloaded.get_layer("fc7")
    assert isinstance(head, CombinedMargin)
    assert head.m2 == 0.25
    np.testing.assert_array_equal(
        head.kernel.numpy(), model.get_layer("fc7").kernel.numpy()
    )
    assert load_backbone(path).name == "mobilefacenet"


@pytest.mark.parametrize("name", sorted(HEADS))
def test_fit_step_gives_finite_gradients(name):
    rng = np.random.default_rng(1)
    image = keras.Input((EMBEDDING_SIZE,))
    label = keras.Input((), dtype="int32")
    features = keras.layers.Dense(EMBEDDING_SIZE, name="features")(image)
    model = keras.Model([image, label], HEADS[name]()([features, label]))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = rng.normal(size=(8, EMBEDDING_SIZE)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, 8).astype(np.int32)
    before = model.get_layer("fc7").kernel.numpy()
    history = model.fit([x, y], y, batch_size=8, epochs=1, verbose=0)
    after = model.get_layer("fc7").kernel.numpy()
    assert np.isfinite(history.history["loss"][0])
    assert np.all(np.isfinite(after))
    assert not np.array_equal(before, after)
