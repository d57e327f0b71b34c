"""Synthetic faces: a small insightface-format dataset made from a seed.

Each identity is a set of drawn facial features (face shape, skin and hair
colour, hair parting, eyebrows, eyes, nose, mouth, a mole, sometimes
glasses and a skin pattern). The features sit near insightface's 112x112
alignment template, and several are left-right asymmetric, so a mirrored
face is not the same picture. Each image of an identity varies the pose
(roll, scale, shift, a little yaw), the expression, the lighting
(brightness, tint, a directional gradient), the background, sensor noise,
JPEG quality and, now and then, an occluding band.

Training identities and verification identities are disjoint. Every image
comes from its own random stream `(seed, role, identity, image)`, so the
output is the same for the same seed, numpy and Pillow versions.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mfn_tf.data.errors import DatasetError
from mfn_tf.data.images import encode_jpeg
from mfn_tf.data.packing import check_outputs_free, write_dataset
from mfn_tf.data.verification_bin import save_bin

logger = logging.getLogger(__name__)

IMAGE_SIZE = 112
VERIFICATION_NAME = "synth.bin"

# insightface's 5-point template for 112x112 crops (x, y): eyes, nose tip,
# mouth corners. The synthetic features are placed around it.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

# Random-stream roles, so that changing one count leaves the others alone.
_TRAIN_ROLE, _VERIFICATION_ROLE, _PAIRS_ROLE = 0, 1, 2
_IDENTITY, _IMAGE = 0, 1


@dataclass(frozen=True)
class SyntheticConfig:
    """Size of a synthetic dataset; the defaults make a demo of a few minutes."""

    classes: int = 64  # training identities
    images_per_class: int = 24
    verification_classes: int = 20  # held-out identities of the .bin
    verification_images_per_class: int = 10
    pairs: int = 300  # verification pairs, alternately same and different
    seed: int = 0


# Natural skin tones from light to dark, and hair colours (RGB).
_SKIN_LIGHT = np.array([238, 200, 172])
_SKIN_DARK = np.array([105, 68, 48])
_HAIR_COLOURS = np.array(
    [
        [25, 20, 20],  # black
        [60, 40, 30],  # dark brown
        [110, 75, 45],  # brown
        [195, 165, 105],  # blond
        [150, 70, 35],  # red
        [150, 150, 150],  # grey
        [225, 222, 215],  # white
    ]
)


def _identity_params(rng):
    """Draw the fixed features of one identity."""
    tone = rng.uniform(0, 1)
    skin = _SKIN_LIGHT * (1 - tone) + _SKIN_DARK * tone + rng.normal(0, 8, 3)
    hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] + rng.normal(0, 12, 3)
    return {
        "face_rx": rng.uniform(31, 39),
        "face_ry": rng.uniform(41, 50),
        "jaw": rng.uniform(-0.25, 0.25),  # narrower (>0) or wider chin
        "skin": skin,
        "hair": hair,
        "hairline": rng.uniform(20, 34),
        "parting": rng.uniform(-18, 18),  # asymmetric hair parting, px
        "hair_volume": rng.uniform(0.9, 1.25),
        "eye_dx": rng.uniform(-3.5, 3.5),  # half-distance change of the eyes
        "eye_dy": rng.uniform(-3, 3),
        "eye_size": rng.uniform(3.2, 5.5),
        "eye_ratio": rng.uniform(0.45, 0.8),
        "eye_tilt": rng.uniform(-0.25, 0.25),
        "iris": rng.uniform([20, 20, 10], [120, 140, 150]),
        "brow_thickness": rng.uniform(1.2, 3.2),
        "brow_gap": rng.uniform(6, 11),
        "brow_slope": rng.uniform(-0.3, 0.3, 2),  # per side: asymmetric
        "brow_opacity": rng.uniform(0.35, 0.9),
        "nose_length": rng.uniform(10, 20),
        "nose_width": rng.uniform(5, 10),
        "nose_dx": rng.uniform(-2, 2),
        "mouth_width": rng.uniform(11, 19),
        "mouth_dy": rng.uniform(-3, 4),
        "lip": skin * rng.uniform(0.55, 0.85) + rng.uniform([15, 0, 0], [50, 10, 15]),
        "lip_thickness": rng.uniform(1.8, 4.0),
        "mole": (rng.uniform(-26, 26), rng.uniform(-20, 30), rng.uniform(1.2, 3.0)),
        "glasses": rng.random() < 0.25,
        "glasses_colour": rng.uniform(0, 90, 3),
        # Skin texture: amplitude, vertical frequency, phase, horizontal frequency.
        "pattern": (rng.uniform(0, 0.08), rng.uniform(0.1, 0.5),
                    rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.6)),
        "beard": rng.random() < 0.2,
    }


def _ellipse(u, v, cx, cy, rx, ry, softness=1.0, angle=0.0):
    """Return the opacity of a filled ellipse in face coordinates `(u, v)`."""
    du, dv = u - cx, v - cy
    if angle:
        cos, sin = np.cos(angle), np.sin(angle)
        du, dv = cos * du + sin * dv, -sin * du + cos * dv
    distance = np.sqrt((du / rx) ** 2 + (dv / ry) ** 2)
    # A soft edge about `softness` px wide avoids aliasing.
    return np.clip((1 - distance) * np.minimum(rx, ry) / softness + 0.5, 0, 1)


def _blend(image, mask, colour):
    """Paint `colour` over `image` in place, with opacity `mask`."""
    image += (np.asarray(colour, dtype=np.float32) - image) * mask[..., None]


class _Canvas:
    """An image and, for each pixel, its position `(u, v)` in the frontal
    face frame, so features are drawn where the posed face puts them.

    Small features are drawn only inside their bounding box (`region`),
    which makes rendering about 1.3 times faster than full-frame masks.
    """

    def __init__(self, rng):
        size = IMAGE_SIZE
        self.centre = size / 2
        # Pose: roll, scale and shift map the pixel grid back into the
        # frontal face frame. Yaw moves features across the face.
        self.roll = rng.normal(0, 0.09)
        self.scale = rng.uniform(0.9, 1.1)
        self.shift = rng.normal(0, 2.5, 2)
        self.yaw = rng.normal(0, 0.12)
        self.ys, self.xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        x0 = self.xs - self.centre - self.shift[0]
        y0 = self.ys - self.centre - self.shift[1]
        cos, sin = np.cos(self.roll), np.sin(self.roll)
        self.u = (cos * x0 + sin * y0) / self.scale + self.centre
        self.v = (-sin * x0 + cos * y0) / self.scale + self.centre
        background = rng.uniform(20, 235, 3)
        gradient = rng.uniform(-40, 40, 3)
        vertical = ((self.ys / size) - 0.5)[..., None]
        self.image = (background + gradient * vertical).astype(np.float32)
        self.whole = (slice(None), slice(None))

    def turned(self, x, depth):
        """Return x moved by the yaw, further the nearer `depth` (px) is to
        the camera."""
        return x + self.yaw * depth

    def region(self, cx, cy, radius):
        """Return the pixel slices that cover a disc of the face frame."""
        du, dv = (cx - self.centre) * self.scale, (cy - self.centre) * self.scale
        cos, sin = np.cos(self.roll), np.sin(self.roll)
        x = cos * du - sin * dv + self.centre + self.shift[0]
        y = sin * du + cos * dv + self.centre + self.shift[1]
        reach = radius * self.scale + 3
        x0, x1 = int(max(0, x - reach)), int(min(IMAGE_SIZE, x + reach + 1))
        y0, y1 = int(max(0, y - reach)), int(min(IMAGE_SIZE, y + reach + 1))
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))

    def ellipse(self, region, cx, cy, rx, ry, softness=1.0, angle=0.0):
        return _ellipse(self.u[region], self.v[region], cx, cy, rx, ry, softness, angle)

    def paint(self, region, mask, colour):
        _blend(self.image[region], mask, colour)


# Centre of the face ellipse in the frontal frame, px.
_FACE_CENTRE_Y = 62.0


def _draw_head(canvas, p, rng):
    """Draw hair, face, fringe and beard; return the face mask."""
    u, v = canvas.u, canvas.v
    face_cx, face_cy = canvas.turned(canvas.centre, 6), _FACE_CENTRE_Y
    hair = _ellipse(u, v, face_cx, face_cy - 8, p["face_rx"] * 1.18 * p["hair_volume"],
                    p["face_ry"] * 1.05, softness=2.0)
    hair *= v < face_cy + 8
    canvas.paint(canvas.whole, hair, p["hair"])

    # Face: an ellipse whose lower half narrows or widens with `jaw`, with
    # a faint identity-specific skin texture.
    lower = np.clip((v - face_cy) / p["face_ry"], 0, 1)
    face = _ellipse(u, v, face_cx, face_cy, p["face_rx"] * (1 - p["jaw"] * lower), p["face_ry"])
    amplitude, vertical, phase, horizontal = p["pattern"]
    texture = 1 + amplitude * np.sin(horizontal * u + phase) * np.cos(vertical * v)
    skin = p["skin"] * (1 + rng.normal(0, 0.03, 3))
    canvas.image += (skin * texture[..., None] - canvas.image) * face[..., None]

    # Hair over the forehead, shaped by the identity's parting.
    top = face_cy - p["face_ry"] + p["hairline"]
    parting_x = canvas.turned(canvas.centre + p["parting"], 4)
    fringe = face * np.clip((top - v + 6 * np.tanh((u - parting_x) / 8) ** 2) / 1.5, 0, 1)
    canvas.paint(canvas.whole, fringe, p["hair"])
    if p["beard"]:
        chin = face_cy + p["face_ry"] * 0.6
        canvas.paint(canvas.whole, face * np.clip((v - chin) / 3, 0, 1) * 0.8, p["hair"])
    return face


def _draw_eyes(canvas, p, rng):
    blink = rng.uniform(0.55, 1.1)
    for side, (eye_x, eye_y) in enumerate(ARCFACE_TEMPLATE[:2]):
        sign = -1 if side == 0 else 1
        ex = canvas.turned(eye_x + sign * p["eye_dx"], 10)
        ey = eye_y + p["eye_dy"] + sign * p["eye_tilt"] * 4
        rx, ry = p["eye_size"] * 1.5, p["eye_size"] * p["eye_ratio"] * blink
        region = canvas.region(ex, ey - p["brow_gap"], rx + 12)
        eye = canvas.ellipse(region, ex, ey, rx, ry, softness=0.8)
        canvas.paint(region, eye, (238, 236, 230))
        gaze = rng.normal(0, 0.8)
        iris_radius = p["eye_size"] * 0.65
        iris = canvas.ellipse(region, ex + gaze, ey, iris_radius, iris_radius, 0.8) * eye
        canvas.paint(region, iris, p["iris"])
        brow_y = ey - p["brow_gap"] - p["eye_size"] * 0.5 + rng.normal(0, 0.6)
        brow = canvas.ellipse(region, ex, brow_y, p["eye_size"] * 2.0, p["brow_thickness"],
                              softness=0.8, angle=sign * p["brow_slope"][side])
        canvas.paint(region, brow * p["brow_opacity"], p["hair"] * 0.6)
        if p["glasses"]:
            outer = canvas.ellipse(region, ex, ey, rx + 5, rx + 2)
            inner = canvas.ellipse(region, ex, ey, rx + 3.8, rx + 0.8)
            canvas.paint(region, np.clip(outer - inner, 0, 1), p["glasses_colour"])
    if p["glasses"]:
        bridge_x = canvas.turned(canvas.centre, 10)
        bridge_y = ARCFACE_TEMPLATE[0, 1] + p["eye_dy"] - 1
        region = canvas.region(bridge_x, bridge_y, 8)
        canvas.paint(region, canvas.ellipse(region, bridge_x, bridge_y, 7, 0.9),
                     p["glasses_colour"])


def _draw_nose_and_mouth(canvas, p, rng):
    nose_x, nose_y = ARCFACE_TEMPLATE[2]
    nose_x = canvas.turned(nose_x + p["nose_dx"], 18)
    region = canvas.region(nose_x, nose_y - p["nose_length"] / 2, p["nose_length"] + 4)
    shade = canvas.ellipse(region, nose_x + 2, nose_y - p["nose_length"] / 2 + 2,
                           p["nose_width"] * 0.4, p["nose_length"] / 2, softness=2.0)
    canvas.paint(region, shade * 0.35, p["skin"] * 0.5)
    nostrils = canvas.ellipse(region, nose_x, nose_y + 1, p["nose_width"], 2.2, softness=1.2)
    canvas.paint(region, nostrils * 0.6, p["skin"] * 0.45)

    mouth_x = canvas.turned(canvas.centre, 12)
    mouth_y = (ARCFACE_TEMPLATE[3, 1] + ARCFACE_TEMPLATE[4, 1]) / 2 - 3 + p["mouth_dy"]
    smile = rng.normal(0, 0.012)
    opening = max(0.0, rng.normal(0, 1.2))
    region = canvas.region(mouth_x, mouth_y, p["mouth_width"] + 6)
    u = canvas.u[region]
    curved_v = canvas.v[region] - smile * (u - mouth_x) ** 2
    lips = _ellipse(u, curved_v, mouth_x, mouth_y, p["mouth_width"], p["lip_thickness"] + opening, 0.9)
    canvas.paint(region, lips, p["lip"])
    if opening > 0.8:
        gap = _ellipse(u, curved_v, mouth_x, mouth_y, p["mouth_width"] * 0.8, opening * 0.7, 0.8)
        canvas.paint(region, gap, (60, 20, 25))


def _draw_mole(canvas, p, face):
    mole_x, mole_y, radius = p["mole"]
    mole_x = canvas.turned(canvas.centre + mole_x, 8)
    mole_y += _FACE_CENTRE_Y
    region = canvas.region(mole_x, mole_y, radius + 2)
    mole = canvas.ellipse(region, mole_x, mole_y, radius, radius, 0.7)
    canvas.paint(region, mole * face[region], p["skin"] * 0.35)


def _apply_lighting_and_noise(canvas, rng):
    """Apply gain, tint, a directional gradient, an occasional occluding
    band and sensor noise."""
    image = canvas.image
    light = (rng.uniform(0.7, 1.2) * rng.uniform(0.95, 1.05, 3)).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * (canvas.xs - canvas.centre)
            + np.sin(direction) * (canvas.ys - canvas.centre)) / IMAGE_SIZE
    image *= light
    image *= (1 + rng.uniform(0, 0.6) * ramp)[..., None]
    if rng.random() < 0.15:
        # An occluding band, like a hand, a scarf or a strap.
        band_y = rng.uniform(30, 100)
        band = np.clip((6 - np.abs(canvas.ys - band_y)) / 1.5, 0, 1)
        canvas.paint(canvas.whole, band, rng.uniform(0, 255, 3))
    image += rng.normal(0, rng.uniform(2, 9), image.shape).astype(np.float32)


def render_face(params, rng):
    """Render one image of an identity; returns uint8 `(112, 112, 3)`."""
    canvas = _Canvas(rng)
    face = _draw_head(canvas, params, rng)
    _draw_eyes(canvas, params, rng)
    _draw_nose_and_mouth(canvas, params, rng)
    _draw_mole(canvas, params, face)
    _apply_lighting_and_noise(canvas, rng)
    return np.clip(np.rint(canvas.image), 0, 255).astype(np.uint8)


def render_identity_images(seed, role, identity, count):
    """Return `count` JPEG-encoded images of one identity."""
    params = _identity_params(np.random.default_rng([seed, role, identity, _IDENTITY]))
    images = []
    for index in range(count):
        rng = np.random.default_rng([seed, role, identity, _IMAGE, index])
        quality = int(rng.integers(75, 96))
        images.append(encode_jpeg(render_face(params, rng), quality=quality))
    return images


def make_pairs(config, images):
    """Return `(image indices a, b, issame)` of verification pairs.

    `images` is the per-identity image list of the verification
    identities. Pairs alternate same and different, so any contiguous fold
    of them is balanced.
    """
    rng = np.random.default_rng([config.seed, _PAIRS_ROLE])
    count = config.verification_classes
    per_class = config.verification_images_per_class
    pairs = []
    for index in range(config.pairs):
        if index % 2 == 0:
            identity = int(rng.integers(count))
            first, second = rng.choice(per_class, 2, replace=False)
            pairs.append(((identity, int(first)), (identity, int(second)), True))
        else:
            first_id, second_id = rng.choice(count, 2, replace=False)
            pairs.append(
                ((int(first_id), int(rng.integers(per_class))),
                 (int(second_id), int(rng.integers(per_class))), False)
            )
    return pairs


def _validate(config):
    if config.classes < 2:
        raise DatasetError(f"--classes must be at least 2, got {config.classes}")
    if config.images_per_class < 1:
        raise DatasetError(f"--images-per-class must be at least 1, got {config.images_per_class}")
    if config.verification_classes < 2:
        raise DatasetError(
            f"--verification-classes must be at least 2, got {config.verification_classes}"
        )
    if config.verification_images_per_class < 2:
        raise DatasetError(
            "--verification-images-per-class must be at least 2 for same pairs, got "
            f"{config.verification_images_per_class}"
        )
    if config.pairs < 2:
        raise DatasetError(f"--pairs must be at least 2, got {config.pairs}")


def write_synthetic_dataset(out_dir, config=SyntheticConfig(), overwrite=False, progress=True):
    """Generate a training set and a verification `.bin` into `out_dir`.

    Writes `train.rec`, `train.idx`, `property`, `labels.txt` (the training
    identities) and `synth.bin` (pairs of held-out identities).

    Returns:
        The paths of the dataset folder and of the `.bin`.
    """
    _validate(config)
    out_dir = Path(out_dir)
    bin_path = out_dir / VERIFICATION_NAME
    check_outputs_free(out_dir, overwrite)
    if bin_path.exists() and not overwrite:
        raise DatasetError(f"{bin_path} already exists; pass --overwrite to replace it")

    total = (config.classes * config.images_per_class
             + config.verification_classes * config.verification_images_per_class)
    bar = tqdm(total=total, desc="rendering synthetic faces", unit="image", disable=not progress)
    with bar:
        training = {}
        for identity in range(config.classes):
            training[f"synth_{identity:05d}"] = render_identity_images(
                config.seed, _TRAIN_ROLE, identity, config.images_per_class
            )
            bar.update(config.images_per_class)
        verification = []
        for identity in range(config.verification_classes):
            verification.append(render_identity_images(
                config.seed, _VERIFICATION_ROLE, identity, config.verification_images_per_class
            ))
            bar.update(config.verification_images_per_class)

    write_dataset(out_dir, training, (IMAGE_SIZE, IMAGE_SIZE), load_image=bytes,
                  overwrite=overwrite, progress=False)
    bin_images, issame = [], []
    for (id_a, image_a), (id_b, image_b), same in make_pairs(config, verification):
        bin_images += [verification[id_a][image_a], verification[id_b][image_b]]
        issame.append(same)
    save_bin(bin_path, bin_images, issame)
    logger.info(
        "wrote %d training images of %d identities and %d verification pairs to %s",
        config.classes * config.images_per_class, config.classes, len(issame), out_dir,
    )
    return out_dir, bin_path
