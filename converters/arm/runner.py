"""Embed faces with one artifact and one runtime setting; run inside emulation.

`python runner.py JOB.json` is started by the host under QEMU with the
sysroot's Python, which has only numpy, ncnn and ai-edge-litert, so this
file imports nothing from the project. The job names the faces (a uint8
`(N, H, W, 3)` RGB `.npy`), the artifact's runtime and files, a setting
from `SETTINGS` and the output `.npy`. The runner prints `progress I` after
each face, and last `result {json}` with the runtime's own report. Errors
go to stderr with a non-zero exit status.

The host imports this module too, for `SETTINGS`.
"""

import json
import sys
import time

# Setting name -> what it selects. "default" is each runtime's behaviour
# when an app changes nothing, "fp32" forces float32 arithmetic.
SETTINGS = {
    "ncnn": {
        "default": "ncnn's default options: fp16 storage, packed layout and "
        "arithmetic wherever the CPU reports them (fp16 arithmetic needs asimdhp)",
        "fp16-storage": "use_fp16_arithmetic off: weights and activations stay "
        "fp16 in memory (use_fp16_storage, use_fp16_packed), arithmetic is fp32",
        "fp32": "use_fp16_storage, use_fp16_packed and use_fp16_arithmetic off",
    },
    "litert": {
        "default": "Interpreter with its default XNNPACK delegate, which computes "
        "in fp32 (fp16 weights are dequantized when the model loads)",
        "builtin": "Interpreter with TFLite's built-in kernels and no XNNPACK "
        "delegate, as with XNNPACK turned off in an app",
        "fp32": "CompiledModel on the CPU, XNNPACK flags without FORCE_FP16",
        "fp16": "CompiledModel on the CPU, XNNPACK forced to fp16 arithmetic "
        "(TFLITE_XNNPACK_DELEGATE_FLAG_FORCE_FP16)",
    },
}

# The CPU features a setting needs; without them it is skipped.
SETTING_REQUIREMENTS = {
    # NOTE: checked with ai-edge-litert 2.3.0: its aarch64 wheel builds the
    # CompiledModel library with LSE atomics (ARMv8.1), and it stops with
    # SIGILL on an ARMv8.0 core such as the Cortex-A53.
    ("litert", "fp32"): ("atomics",),
    ("litert", "fp16"): ("atomics", "asimdhp"),
}

# Settings whose arithmetic is fp32 by construction: they must reach the
# artifact's parity bar, as on x86. The others are measured, not judged.
FP32_SETTINGS = {("ncnn", "fp32"), ("litert", "default"), ("litert", "builtin"), ("litert", "fp32")}

# XNNPACK delegate flags (tensorflow/lite/delegates/xnnpack/xnnpack_delegate.h).
XNNPACK_FLAG_QS8 = 0x1
XNNPACK_FLAG_QU8 = 0x2
XNNPACK_FLAG_FORCE_FP16 = 0x4


class SkipSetting(Exception):
    """A setting that cannot run on this artifact; the message gives the reason."""


def _quantize(image, detail):
    import numpy as np

    if detail["dtype"] == np.float32:
        return image[None]
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(image / scale + zero_point), info.min, info.max).astype(detail["dtype"])[None]


def _dequantize(output, detail):
    import numpy as np

    if output.dtype == np.float32:
        return output
    scale, zero_point = detail["quantization"]
    return (output.astype(np.float32) - zero_point) * scale


def interpreter_embedder(path, setting, threads):
    """Return `(embed_one, info)` for LiteRT's Interpreter API."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO
    if setting == "builtin":
        resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(
        model_path=path, num_threads=threads, experimental_op_resolver_type=resolver
    )
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]

    def embed_one(image):
        interpreter.set_tensor(input_detail["index"], _quantize(image, input_detail))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)[0]

    return embed_one, {"api": "Interpreter", "op_resolver": resolver.name}


def compiled_model_embedder(path, setting, threads):
    """Return `(embed_one, info)` for LiteRT's CompiledModel API on the CPU."""
    import numpy as np
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, Options

    flags = XNNPACK_FLAG_QS8 | XNNPACK_FLAG_QU8
    if setting == "fp16":
        flags |= XNNPACK_FLAG_FORCE_FP16
    options = Options(HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=threads, xnnpack_flags=flags))
    model = CompiledModel.from_file(path, options=options)
    signature = model.get_signature_by_index(0)["key"]
    inputs = list(model.get_input_tensor_details(signature).values())
    outputs = list(model.get_output_tensor_details(signature).values())
    if inputs[0]["dtype"] != "float32" or outputs[0]["dtype"] != "float32":
        raise SkipSetting(
            f"this check feeds CompiledModel float32 only; the model's input is "
            f"{inputs[0]['dtype']} and its output {outputs[0]['dtype']}"
        )
    size = int(np.prod(outputs[0]["shape"]))
    input_buffers = model.create_input_buffers(0)
    output_buffers = model.create_output_buffers(0)

    def embed_one(image):
        input_buffers[0].write(np.ascontiguousarray(image[None], dtype=np.float32))
        model.run_by_index(0, input_buffers, output_buffers)
        return np.asarray(output_buffers[0].read(size, np.float32)).reshape(-1)

    info = {
        "api": "CompiledModel",
        "xnnpack_flags": flags,
        "fully_accelerated": bool(model.is_fully_accelerated()),
    }
    return embed_one, info


def ncnn_embedder(files, setting, threads, blobs):
    """Return `(embed_one, info)` for ncnn's Python binding."""
    import ncnn
    import numpy as np

    param = next(path for path in files if path.endswith(".param"))
    weights = next(path for path in files if path.endswith(".bin"))
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if setting in ("fp16-storage", "fp32"):
        net.opt.use_fp16_arithmetic = False
    if setting == "fp32":
        net.opt.use_fp16_storage = False
        net.opt.use_fp16_packed = False
    if net.load_param(param) != 0:
        raise RuntimeError(f"ncnn failed to load {param}")
    if net.load_model(weights) != 0:
        raise RuntimeError(f"ncnn failed to load {weights}")

    def embed_one(image):
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        # ncnn.Mat(array) borrows the array; the clone owns its data.
        owned = ncnn.Mat(chw).clone()
        with net.create_extractor() as extractor:
            extractor.input(blobs["input"], owned)
            status, output = extractor.extract(blobs["output"])
            if status != 0:
                raise RuntimeError(f"ncnn failed to extract blob {blobs['output']!r} (status {status})")
            return np.array(output, dtype=np.float32).reshape(-1).copy()

    info = {
        "use_fp16_storage": bool(net.opt.use_fp16_storage),
        "use_fp16_packed": bool(net.opt.use_fp16_packed),
        "use_fp16_arithmetic": bool(net.opt.use_fp16_arithmetic),
        "use_bf16_storage": bool(net.opt.use_bf16_storage),
        "cpu_asimdhp": bool(ncnn.cpu_support_arm_asimdhp()),
    }
    return embed_one, info


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("numpy", "ncnn", "ai-edge-litert"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def run_job(job):
    import numpy as np

    runtime, setting, threads = job["runtime"], job["setting"], job["threads"]
    if setting not in SETTINGS.get(runtime, {}):
        raise ValueError(f"unknown setting {setting!r} for runtime {runtime!r}")
    start = time.perf_counter()
    if runtime == "ncnn":
        embed_one, info = ncnn_embedder(job["files"], setting, threads, job["ncnn_blobs"])
    elif setting in ("default", "builtin"):
        embed_one, info = interpreter_embedder(job["files"][0], setting, threads)
    else:
        embed_one, info = compiled_model_embedder(job["files"][0], setting, threads)
    faces = np.load(job["faces"])
    embeddings = []
    for index, face in enumerate(faces):
        embeddings.append(embed_one(face.astype(np.float32)))
        print(f"progress {index + 1}", flush=True)
    np.save(job["output"], np.stack(embeddings).astype(np.float32))
    info["versions"] = _versions()
    info["seconds"] = round(time.perf_counter() - start, 1)
    return info


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: python runner.py JOB.json")
    with open(argv[1]) as file:
        job = json.load(file)
    try:
        info = run_job(job)
    except SkipSetting as skip:
        print("result " + json.dumps({"status": "skipped", "reason": str(skip)}), flush=True)
        return
    print("result " + json.dumps({"status": "ok", "info": info}), flush=True)


if __name__ == "__main__":
    main(sys.argv)
