"""Run a converted embedding model with its real runtime.

One runner per runtime, each with the same contract: `embed(images)` takes
float32 `(N, 112, 112, 3)` RGB pixels in 0-255, the Keras model's input,
and returns float32 `(N, D)` embeddings. Each runner converts to its
artifact's layout (NCHW for ONNX and ncnn) and type (the quantized input
of an int8 TFLite model) itself, so parity checks and benchmarks feed all
of them the same array. The exported models take batch 1, so the runners
invoke them once per image.
"""

import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def package_version(name):
    """Return the installed version of a distribution, or "not installed"."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _check_images(images):
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            "images must be a (N, height, width, 3) RGB array; "
            f"received shape {images.shape}"
        )
    return images


class KerasRunner:
    """The Keras model itself, in inference mode: the reference."""

    runtime = "keras"

    def __init__(self, model, batch_size=64):
        self.model = model
        self.batch_size = batch_size

    @property
    def version(self):
        return package_version("keras")

    def embed(self, images):
        images = _check_images(images)
        outputs = [
            np.asarray(self.model(images[start : start + self.batch_size], training=False))
            for start in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(outputs).astype(np.float32)


class LiteRTRunner:
    """A `.tflite` file run by LiteRT's interpreter (`ai_edge_litert`).

    Float inputs are fed as they are. An integer input (a full-integer
    model built with uint8 or int8 input) is quantized with the input
    tensor's own scale and zero point, and an integer output dequantized.
    """

    runtime = "litert"

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input_detail = self.interpreter.get_input_details()[0]
        self.output_detail = self.interpreter.get_output_details()[0]

    @property
    def version(self):
        return package_version("ai-edge-litert")

    def _to_input(self, image):
        dtype = self.input_detail["dtype"]
        if dtype == np.float32:
            return image[None]
        scale, zero_point = self.input_detail["quantization"]
        info = np.iinfo(dtype)
        quantized = np.round(image / scale + zero_point)
        return np.clip(quantized, info.min, info.max).astype(dtype)[None]

    def _from_output(self, output):
        if output.dtype == np.float32:
            return output
        scale, zero_point = self.output_detail["quantization"]
        return (output.astype(np.float32) - zero_point) * scale

    def embed(self, images):
        images = _check_images(images)
        embeddings = []
        for image in images:
            self.interpreter.set_tensor(self.input_detail["index"], self._to_input(image))
            self.interpreter.invoke()
            output = self.interpreter.get_tensor(self.output_detail["index"])
            embeddings.append(self._from_output(output)[0])
        return np.stack(embeddings).astype(np.float32)


class OnnxRuntimeRunner:
    """An `.onnx` file run by onnxruntime's CPU execution provider."""

    runtime = "onnxruntime"

    def __init__(self, path, num_threads=None):
        import onnxruntime

        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    @property
    def version(self):
        return package_version("onnxruntime")

    def embed(self, images):
        images = _check_images(images)
        embeddings = [
            self.session.run(None, {self.input_name: image.transpose(2, 0, 1)[None]})[0][0]
            for image in images
        ]
        return np.stack(embeddings).astype(np.float32)


class NcnnRunner:
    """A `.param`/`.bin` pair run by ncnn's Python binding on the CPU.

    `ncnn.Mat(array)` borrows the array's memory. The runner keeps each
    input array referenced until its Mat is cloned, and feeds the clone,
    which owns its data. That avoids two failures seen with ncnn
    1.0.20261020: a borrowed Mat of a temporary array reads freed memory
    (wrong embeddings, no error), and a borrowed input that the first layer
    modifies in place crashed the process in light mode.

    Args:
        param_path, bin_path: the model files.
        fp16: compute with fp16 storage and arithmetic where the CPU
            supports them, as on ARM phones. False forces fp32 throughout.
        input_name, output_name: blob names; pnnx writes "in0" and "out0".
    """

    runtime = "ncnn"

    def __init__(
        self,
        param_path,
        bin_path,
        fp16=False,
        num_threads=None,
        input_name="in0",
        output_name="out0",
    ):
        import ncnn

        self.param_path = Path(param_path)
        self.bin_path = Path(bin_path)
        self.input_name = input_name
        self.output_name = output_name
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.use_fp16_storage = fp16
        self.net.opt.use_fp16_packed = fp16
        self.net.opt.use_fp16_arithmetic = fp16
        if num_threads:
            self.net.opt.num_threads = num_threads
        if self.net.load_param(str(self.param_path)) != 0:
            raise RuntimeError(f"ncnn failed to load {self.param_path}")
        if self.net.load_model(str(self.bin_path)) != 0:
            raise RuntimeError(
                f"ncnn failed to load {self.bin_path}; it must be the weights "
                f"written together with {self.param_path.name}"
            )

    @property
    def version(self):
        return package_version("ncnn")

    def _embed_one(self, image):
        import ncnn

        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        owned = ncnn.Mat(chw).clone()
        with self.net.create_extractor() as extractor:
            extractor.input(self.input_name, owned)
            status, output = extractor.extract(self.output_name)
            if status != 0:
                raise RuntimeError(
                    f"ncnn failed to extract blob {self.output_name!r} from "
                    f"{self.param_path} (status {status})"
                )
            # The copy outlives the extractor's blob memory.
            embedding = np.array(output, dtype=np.float32).reshape(-1).copy()
        del chw
        return embedding

    def embed(self, images):
        images = _check_images(images)
        return np.stack([self._embed_one(image) for image in images])


def open_runner(runtime, files, precision="fp32", num_threads=None, model_io=None):
    """Open the runner for an artifact as `report.json` describes it.

    Args:
        runtime: "litert", "onnxruntime" or "ncnn".
        files: the artifact's file paths (`.param` before `.bin` for ncnn).
        precision: "fp32", "fp16" or "int8"; selects ncnn's fp16 options.
        model_io: the parsed `model_io.json`, for ncnn's blob names.
    """
    files = [Path(path) for path in files]
    if runtime == "litert":
        return LiteRTRunner(files[0], num_threads=num_threads)
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(files[0], num_threads=num_threads)
    if runtime == "ncnn":
        blobs = (model_io or {}).get("ncnn", {})
        # `files` lists the .param before the .bin (report.json's order),
        # also when both carry a `.failed` suffix.
        if len(files) != 2 or ".param" not in files[0].name:
            raise ValueError(f"an ncnn artifact needs [.param, .bin] files, got {files}")
        return NcnnRunner(
            files[0],
            files[1],
            fp16=precision == "fp16",
            num_threads=num_threads,
            input_name=blobs.get("input_blob", "in0"),
            output_name=blobs.get("output_blob", "out0"),
        )
    raise ValueError(
        f"unknown runtime {runtime!r}; expected 'litert', 'onnxruntime' or 'ncnn'"
    )
