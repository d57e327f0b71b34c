"""Batched embedding of face images, with the mirrored image for Accuracy-Flip."""

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

DEFAULT_BATCH_SIZE = 64


@dataclass(frozen=True)
class Embeddings:
    """Un-normalised embeddings of images and, if computed, of their mirrors."""

    original: np.ndarray
    flipped: np.ndarray | None = None

    @property
    def combined(self):
        """Sum of the original and mirrored embeddings (insightface's Flip
        embedding), or the original alone without mirrors."""
        if self.flipped is None:
            return self.original
        return self.original + self.flipped

    @property
    def xnorm(self):
        """Mean L2 norm of the un-normalised embeddings.

        insightface averages over the original and the mirrored embeddings
        together, so both count here when the mirrors were computed.
        """
        parts = [self.original] if self.flipped is None else [self.original, self.flipped]
        return float(np.mean(np.linalg.norm(np.concatenate(parts), axis=1)))


class ImageEmbedder:
    """Run a backbone on uint8 RGB images in inference mode, batch by batch.

    The forward pass is a `tf.function` traced once for any batch size, so
    an embedder called repeatedly (as the training callback does) reuses the
    graph. The graph reads the backbone's variables, so its results follow
    the weight updates of training. XLA is off, as for training, where it
    made MobileFaceNet 8-10 times slower on CPU.
    """

    def __init__(self, backbone, batch_size=DEFAULT_BATCH_SIZE):
        import tensorflow as tf

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.backbone = backbone
        self.batch_size = batch_size
        self.image_shape = tuple(backbone.input_shape[1:])
        signature = [tf.TensorSpec((None, *self.image_shape), tf.uint8)]
        self._embed = tf.function(
            self._embed_batch, input_signature=signature, jit_compile=False
        )
        self._embed_with_flip = tf.function(
            self._embed_batch_with_flip, input_signature=signature, jit_compile=False
        )

    def _embed_batch(self, images):
        import tensorflow as tf

        # The backbone takes float RGB in 0-255 and normalises it itself.
        # Under a mixed-precision policy it returns float16, which is too
        # coarse for the distances near the thresholds.
        embeddings = self.backbone(tf.cast(images, tf.float32), training=False)
        return tf.cast(embeddings, tf.float32)

    def _embed_batch_with_flip(self, images):
        import tensorflow as tf

        # One forward pass over the batch and its horizontal mirror.
        both = tf.concat([images, tf.reverse(images, axis=[2])], axis=0)
        original, flipped = tf.split(self._embed_batch(both), 2, axis=0)
        return original, flipped

    def __call__(self, images, flip=True, progress=False, description="embedding"):
        """Embed `images`, a uint8 array of shape (N, height, width, 3).

        `progress` shows a tqdm bar labelled `description` on stderr.

        Returns:
            `Embeddings` in float32; `flipped` is None when `flip` is False.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(
                f"expected uint8 RGB images, got dtype {images.dtype}; decode "
                "them with mfn_tf.data.verification_bin.decode_images"
            )
        if images.shape[1:] != self.image_shape:
            raise ValueError(
                f"images have shape {images.shape[1:]} but the model expects "
                f"{self.image_shape}"
            )
        originals = []
        flips = []
        with tqdm(
            total=len(images), unit="img", desc=description, disable=not progress
        ) as bar:
            for start in range(0, len(images), self.batch_size):
                batch = images[start : start + self.batch_size]
                if flip:
                    original, flipped = self._embed_with_flip(batch)
                    flips.append(flipped.numpy())
                else:
                    original = self._embed(batch)
                originals.append(original.numpy())
                bar.update(len(batch))
        dim = self.backbone.output_shape[-1]
        original = np.concatenate(originals) if originals else np.zeros((0, dim), np.float32)
        if not flip:
            return Embeddings(original=original)
        flipped = np.concatenate(flips) if flips else np.zeros((0, dim), np.float32)
        return Embeddings(original=original, flipped=flipped)


def embed_images(
    backbone, images, batch_size=DEFAULT_BATCH_SIZE, flip=True, progress=False
):
    """Embed uint8 RGB images with `backbone` (see `ImageEmbedder`).

    For repeated calls on the same backbone, keep one `ImageEmbedder`, which
    traces its graph only once.
    """
    return ImageEmbedder(backbone, batch_size)(images, flip=flip, progress=progress)
