"""The face image every artifact is timed on.

Latency does not depend on the pixels, but a real aligned face keeps the
activations in the range that a deployed model receives, which matters
for int8. The report names the face that was used.
"""

from bench.errors import BenchmarkError

SYNTHETIC_SEED = 0


def benchmark_face(face=None, face_dir=None, image_size=112):
    """Return `(face, description)`: a float32 `(1, size, size, 3)` RGB face.

    Args:
        face: an aligned face image file.
        face_dir: a folder of aligned faces; its first image (sorted,
            searched recursively) is used.
        Neither: a synthetic face from `mfn_tf.data.synthetic`.

    Raises:
        BenchmarkError: the image is missing, unreadable or not
            `image_size` square.
    """
    from converters.faces import FaceImagesError, find_face_images, load_faces

    if face is not None and face_dir is not None:
        raise BenchmarkError("pass either --face or --face-dir, not both")
    try:
        if face is not None:
            path = face
        elif face_dir is not None:
            path = find_face_images(face_dir)[0]
        else:
            return _synthetic_face(image_size)
        return load_faces([path], image_size)[:1], f"aligned face {path}"
    except FaceImagesError as error:
        raise BenchmarkError(str(error)) from error


def _synthetic_face(image_size):
    from mfn_tf.data.images import decode_rgb
    from mfn_tf.data.synthetic import IMAGE_SIZE, render_identity_images

    if image_size != IMAGE_SIZE:
        raise BenchmarkError(
            f"synthetic faces are {IMAGE_SIZE}x{IMAGE_SIZE}, but the model takes "
            f"{image_size}x{image_size}; pass --face with an aligned face of that size"
        )
    encoded = render_identity_images(SYNTHETIC_SEED, 0, 0, 1)[0]
    pixels = decode_rgb(encoded, "synthetic face", (image_size, image_size))
    return (
        pixels[None].astype("float32"),
        f"synthetic face (mfn_tf.data.synthetic, seed {SYNTHETIC_SEED}, identity 0)",
    )
