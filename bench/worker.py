"""Run one artifact at one thread count in its own process.

    python -m bench.worker SPEC_JSON

`bench.host` starts one worker per artifact and thread count, so that each
runtime's peak memory is its own process's, as the OS counts it (see
`peak_rss_mib`), and a crash in a native runtime ends only its worker. The
spec names the runtime, precision, files, thread count, warm-up count and
the `.npy` file of the input face (float32 `(1, size, size, 3)`, RGB
0-255).

Protocol: one JSON object per line. On start the worker loads the model,
runs the warm-up and sends `{"ready": true, ...}`, or `{"error": "..."}`
and exits with status 1. Then, for each request line:

- `{"command": "run", "iterations": N}`: one untimed image (so that the
  caches hold this model again after the other workers ran), then N timed
  images; replies `{"latencies_ms": [...]}`.
- `{"command": "stop"}`: replies `{"peak_rss_mib": ...}` and exits.

Libraries that print to stdout would corrupt the protocol, so the worker
writes its replies to a duplicate of the original stdout and points file
descriptor 1 at stderr.
"""

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np


def peak_rss_mib():
    """Return this process's peak resident set size in MiB.

    Linux: `VmHWM` from /proc/self/status, the high-water mark of this
    process image only. `ru_maxrss` would not do: Linux carries the
    parent's peak into it across fork and exec, so every worker would
    report at least the size of the benchmark process that started it.
    macOS: `ru_maxrss`, in bytes there.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _protocol_stream():
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return stream


def open_keras(path, threads):
    """Return an embedding function for a `.keras` model on `threads` threads.

    The model runs inside one traced `tf.function` (no XLA, which is slower
    on CPU for this model), as a TensorFlow deployment would call it.
    """
    import tensorflow as tf

    # Thread pools must be sized before TensorFlow runs its first op. One
    # inter-op thread: the graph is a chain, so only intra-op threads help.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from mfn_tf.model.loading import load_backbone

    model = load_backbone(path)
    size = model.input_shape[1]
    spec = tf.TensorSpec((1, size, size, 3), tf.float32)
    forward = tf.function(
        lambda image: model(image, training=False), input_signature=[spec], jit_compile=False
    )
    return lambda face: forward(face).numpy()


def count_delegate_partitions(interpreter):
    """Return how many delegate kernels (XNNPACK partitions) a LiteRT graph runs as.

    More than one means some ops between the partitions run on TFLite's
    built-in kernels, with a hand-over at every boundary.
    """
    # NOTE: `_get_ops_details` is private, but it is the interpreter's only
    # op listing (present in ai-edge-litert 2.3); delegate kernels appear
    # in it as "DELEGATE" nodes.
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def open_embed(spec):
    """Return `(embed(face) -> embedding, details)` for the artifact in `spec`."""
    if spec["runtime"] == "keras":
        return open_keras(spec["files"][0], spec["threads"]), {}
    from converters.runtimes import open_runner

    runner = open_runner(
        spec["runtime"],
        spec["files"],
        precision=spec["precision"],
        num_threads=spec["threads"],
        model_io=spec.get("model_io"),
    )
    details = {}
    if spec["runtime"] == "litert":
        details["xnnpack_partitions"] = count_delegate_partitions(runner.interpreter)
    return runner.embed, details


def serve(spec, protocol, requests):
    baseline = peak_rss_mib()
    started = time.perf_counter()
    embed, details = open_embed(spec)
    face = np.load(spec["face"])
    load_s = time.perf_counter() - started
    for _ in range(spec["warmup"]):
        embedding = embed(face)
    if spec["warmup"] and not np.isfinite(embedding).all():
        raise ValueError("the model returned non-finite values for the benchmark face")
    send = lambda message: protocol.write(json.dumps(message) + "\n")  # noqa: E731
    send({"ready": True, "load_s": load_s, "baseline_rss_mib": baseline, "details": details})
    for line in requests:
        request = json.loads(line)
        if request["command"] == "run":
            embed(face)
            latencies = []
            for _ in range(request["iterations"]):
                start = time.perf_counter_ns()
                embed(face)
                latencies.append((time.perf_counter_ns() - start) / 1e6)
            send({"latencies_ms": latencies})
        elif request["command"] == "stop":
            send({"peak_rss_mib": peak_rss_mib()})
            return
        else:
            raise ValueError(f"unknown request {request!r}")


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    protocol = _protocol_stream()
    try:
        serve(spec, protocol, sys.stdin)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which raises
        traceback.print_exc()
        protocol.write(json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
