"""Read and write ncnn's `.param`/`.bin` model files.

A `.param` file is text: the magic 7767517, a line "layer_count
blob_count", then one line per layer, "type name input_count output_count
inputs... outputs... key=value...". The `.bin` file contains each layer's
weights in layer order, with no index. A layer reads its arrays either raw
(float32) or tagged: a 4-byte tag, 0 for float32 or 0x01306B47 for
float16, then the values, padded to 4 bytes. So reading a `.bin` needs the
weight layout of every layer type in the file, which this module knows for
the layer types that MobileFaceNet converts to.
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PARAM_MAGIC = 7767517
FLOAT32_TAG = 0
FLOAT16_TAG = 0x01306B47

# Layer types without weights in the `.bin`.
WEIGHTLESS_TYPES = frozenset(
    {"Input", "BinaryOp", "Split", "Reshape", "Flatten", "ReLU", "Noop", "Pooling", "Eltwise"}
)


class NcnnModelError(ValueError):
    """An ncnn model file that this module cannot parse or does not support."""


@dataclass
class WeightArray:
    """One array of a layer's weights; `tagged` arrays may be float16."""

    values: np.ndarray
    tagged: bool
    float16: bool = False


@dataclass
class NcnnLayer:
    """One layer line of a `.param` file and its weights."""

    type: str
    name: str
    inputs: list
    outputs: list
    params: dict = field(default_factory=dict)  # key (str) -> value (str)
    weights: list = field(default_factory=list)

    def int_param(self, key, default=0):
        return int(self.params.get(str(key), default))

    def to_line(self):
        fields = [f"{self.type:<24}", f"{self.name:<24}", str(len(self.inputs)), str(len(self.outputs))]
        fields += self.inputs + self.outputs
        fields += [f"{key}={value}" for key, value in self.params.items()]
        return " ".join(fields)


def read_param(path):
    """Parse a `.param` file into a list of `NcnnLayer` without weights."""
    path = Path(path)
    lines = path.read_text().split("\n")
    if not lines or lines[0].strip() != str(PARAM_MAGIC):
        raise NcnnModelError(
            f"{path}: not a text ncnn .param file (first line is not {PARAM_MAGIC})"
        )
    layer_count, _ = (int(value) for value in lines[1].split())
    layers = []
    for line_number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        try:
            input_count, output_count = int(parts[2]), int(parts[3])
        except (IndexError, ValueError) as error:
            raise NcnnModelError(f"{path}:{line_number}: malformed layer line: {line!r}") from error
        blobs_end = 4 + input_count + output_count
        params = {}
        for item in parts[blobs_end:]:
            key, _, value = item.partition("=")
            params[key] = value
        layers.append(
            NcnnLayer(
                type=parts[0],
                name=parts[1],
                inputs=parts[4 : 4 + input_count],
                outputs=parts[4 + input_count : blobs_end],
                params=params,
            )
        )
    if len(layers) != layer_count:
        raise NcnnModelError(
            f"{path}: the header declares {layer_count} layers but {len(layers)} follow"
        )
    return layers


def write_param(path, layers):
    """Write layers as a `.param` file; the blob count is recomputed."""
    blobs = set()
    for layer in layers:
        blobs.update(layer.outputs)
    lines = [str(PARAM_MAGIC), f"{len(layers)} {len(blobs)}"]
    lines += [layer.to_line() for layer in layers]
    Path(path).write_text("\n".join(lines) + "\n")


def count_layer_types(layers):
    """Return a `Counter` of layer types."""
    return Counter(layer.type for layer in layers)


def _weight_sizes(layer):
    """Return `[(element_count, tagged), ...]` of a layer's `.bin` arrays."""
    kind = layer.type
    if kind in WEIGHTLESS_TYPES:
        return []
    if kind in ("Convolution", "ConvolutionDepthWise", "InnerProduct"):
        bias_key = 1 if kind == "InnerProduct" else 5
        size_key = 2 if kind == "InnerProduct" else 6
        if layer.int_param(8):
            raise NcnnModelError(f"layer {layer.name}: int8 {kind} layers are not supported")
        sizes = [(layer.int_param(size_key), True)]
        if layer.int_param(bias_key):
            sizes.append((layer.int_param(0), False))
        return sizes
    if kind == "PReLU":
        return [(layer.int_param(0, 1), False)]
    if kind == "BatchNorm":
        return [(layer.int_param(0), False)] * 4
    raise NcnnModelError(
        f"layer {layer.name}: reading the weights of ncnn {kind} layers is not supported"
    )


def _check_bounds(data, offset, size, source, layer_name):
    if offset + size > len(data):
        raise NcnnModelError(
            f"{source}: the file ends inside the weights of layer {layer_name}; "
            "the .bin is truncated or belongs to another .param"
        )


def _read_array(data, offset, count, tagged, source, layer_name):
    if not tagged:
        _check_bounds(data, offset, 4 * count, source, layer_name)
        end = offset + 4 * count
        values = np.frombuffer(data, dtype="<f4", count=count, offset=offset)
        return WeightArray(values.copy(), tagged=False), end
    _check_bounds(data, offset, 4, source, layer_name)
    tag = int.from_bytes(data[offset : offset + 4], "little")
    offset += 4
    if tag == FLOAT32_TAG:
        _check_bounds(data, offset, 4 * count, source, layer_name)
        values = np.frombuffer(data, dtype="<f4", count=count, offset=offset)
        return WeightArray(values.copy(), tagged=True), offset + 4 * count
    if tag == FLOAT16_TAG:
        _check_bounds(data, offset, 2 * count, source, layer_name)
        values = np.frombuffer(data, dtype="<f2", count=count, offset=offset)
        padded = (2 * count + 3) // 4 * 4
        return WeightArray(values.copy(), tagged=True, float16=True), offset + padded
    raise NcnnModelError(f"{source}: unsupported weight tag 0x{tag:08x} at byte {offset - 4}")


def read_model(param_path, bin_path):
    """Read a `.param`/`.bin` pair into layers with their weights."""
    layers = read_param(param_path)
    data = Path(bin_path).read_bytes()
    offset = 0
    for layer in layers:
        for count, tagged in _weight_sizes(layer):
            array, offset = _read_array(data, offset, count, tagged, bin_path, layer.name)
            layer.weights.append(array)
    if offset != len(data):
        raise NcnnModelError(
            f"{bin_path}: {len(data) - offset} bytes left after the last layer; the "
            f".bin does not belong to {Path(param_path).name}"
        )
    return layers


def write_model(param_path, bin_path, layers):
    """Write layers and their weights as a `.param`/`.bin` pair."""
    write_param(param_path, layers)
    chunks = []
    for layer in layers:
        for array in layer.weights:
            if not array.tagged:
                chunks.append(np.asarray(array.values, dtype="<f4").tobytes())
            elif array.float16:
                chunks.append(FLOAT16_TAG.to_bytes(4, "little"))
                raw = np.asarray(array.values, dtype="<f2").tobytes()
                chunks.append(raw + b"\0" * (-len(raw) % 4))
            else:
                chunks.append(FLOAT32_TAG.to_bytes(4, "little"))
                chunks.append(np.asarray(array.values, dtype="<f4").tobytes())
    Path(bin_path).write_bytes(b"".join(chunks))
