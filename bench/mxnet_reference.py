"""The MXNet side of the importer's comparisons, run in the MXNet venv only.

    .venv-mxnet/bin/python bench/mxnet_reference.py embed PREFIX EPOCH IMAGES.npy OUT.npy
    .venv-mxnet/bin/python bench/mxnet_reference.py make-checkpoint PREFIX [options]
    .venv-mxnet/bin/python bench/mxnet_reference.py load-params FILE.params OUT.npz

`embed` runs a checkpoint with `mx.mod.Module` on RGB images (N, H, W, 3)
in 0-255, as insightface feeds them, and can add the embeddings of the
mirrored images as insightface's verification does. `make-checkpoint`
writes MobileFaceNet-family checkpoints with random weights in the layout of
insightface's `fmobilefacenet` symbol, with the variants the importer
accepts or must reject. `load-params` reads a `.params` file with MXNet's
own loader, to check the project's numpy parser against it.

This script imports nothing from the project, because the MXNet venv has
numpy < 1.24 and no TensorFlow. The project never needs MXNet at run time.
"""

import argparse
import json
import os
import statistics
import sys
import time


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser("embed", help="embed images with a checkpoint")
    embed.add_argument("prefix")
    embed.add_argument("epoch", type=int)
    embed.add_argument("images", help=".npy of (N, H, W, 3) RGB pixels in 0-255")
    embed.add_argument("out", help=".npy to write the (N, D) embeddings to")
    embed.add_argument("--batch-size", type=int, default=32)
    embed.add_argument(
        "--flip",
        action="store_true",
        help="add the embedding of each horizontally mirrored image",
    )
    embed.add_argument(
        "--flip-out",
        help="with --flip, write the mirrored images' embeddings here and "
        "leave OUT without them",
    )
    embed.add_argument("--threads", type=int, default=0, help="CPU threads, 0 for MXNet's default")
    embed.add_argument("--repeats", type=int, default=1, help="timed runs; the last one is written")
    embed.add_argument("--timing-json", help="write the per-run seconds here")

    make = commands.add_parser("make-checkpoint", help="write a random MobileFaceNet checkpoint")
    make.add_argument("prefix")
    make.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    make.add_argument("--embedding-size", type=int, default=128)
    make.add_argument("--embedding", choices=("dense", "conv"), default="dense")
    make.add_argument("--act", choices=("prelu", "relu"), default="prelu")
    make.add_argument("--dropout", action="store_true", help="Dropout before the embedding layer")
    make.add_argument("--identity", action="store_true", help="an identity node after the input scaling")
    make.add_argument("--fc1-gamma", action="store_true", help="fc1 BatchNorm with fix_gamma=False")
    make.add_argument("--body-eps", type=float, help="eps of every body BatchNorm")
    make.add_argument("--classes", type=int, help="add an ArcFace training head with fc7")
    make.add_argument(
        "--blocks",
        default="5,1,6,1,2",
        help="bottleneck repeats per row of the MobileFaceNet table",
    )
    make.add_argument("--seed", type=int, default=0)

    load = commands.add_parser("load-params", help="read a .params file with mx.nd.load")
    load.add_argument("params")
    load.add_argument("out", help=".npz to write the arrays to")
    return parser.parse_args(argv)


def configure_mxnet(threads):
    # MXNet reads these when its engine starts, so set them before import.
    # MXNet 1.9.1's MKLDNN subgraph fusion fails on a Module's second
    # forward ("We can't generate TBlob for MKLDNN data"); the unfused
    # MKLDNN operators run as fast on the first batch here.
    os.environ.setdefault("MXNET_SUBGRAPH_BACKEND", "NONE")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MXNET_CPU_WORKER_NTHREADS"] = str(threads)


def embed(args):
    configure_mxnet(args.threads)
    import mxnet as mx
    import numpy as np

    images = np.load(args.images)
    if images.ndim != 4 or images.shape[-1] != 3:
        sys.exit(f"{args.images}: expected (N, H, W, 3) RGB images, got shape {images.shape}")
    symbol, arg_params, aux_params = mx.model.load_checkpoint(args.prefix, args.epoch)
    outputs = symbol.get_internals().list_outputs()
    # Training symbols group several heads; the embedding is fc1.
    if "fc1_output" in outputs:
        symbol = symbol.get_internals()["fc1_output"]
    height, width = images.shape[1:3]
    module = mx.mod.Module(symbol, context=mx.cpu(), label_names=None)
    module.bind(data_shapes=[("data", (args.batch_size, 3, height, width))], for_training=False)
    module.set_params(arg_params, aux_params, allow_missing=False, allow_extra=True)

    def run_batch(batch):
        module.forward(mx.io.DataBatch(data=[mx.nd.array(batch)]), is_train=False)
        return module.get_outputs()[0].asnumpy()

    def embed_all():
        chunks, flipped_chunks = [], []
        for start in range(0, len(images), args.batch_size):
            batch = images[start : start + args.batch_size]
            count = len(batch)
            if count < args.batch_size:  # the module is bound to a fixed batch
                padding = np.zeros((args.batch_size - count,) + batch.shape[1:], batch.dtype)
                batch = np.concatenate([batch, padding])
            nchw = batch.transpose(0, 3, 1, 2).astype(np.float32)
            chunks.append(run_batch(nchw)[:count])
            if args.flip:
                mirrored = np.ascontiguousarray(nchw[:, :, :, ::-1])
                flipped_chunks.append(run_batch(mirrored)[:count])
        if not args.flip:
            return np.concatenate(chunks), None
        return np.concatenate(chunks), np.concatenate(flipped_chunks)

    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        embeddings, flipped = embed_all()
        seconds.append(time.perf_counter() - start)
    if flipped is not None and args.flip_out:
        np.save(args.flip_out, flipped)
    elif flipped is not None:
        embeddings = embeddings + flipped
    np.save(args.out, embeddings)
    if args.timing_json:
        with open(args.timing_json, "w") as handle:
            json.dump({"seconds": seconds, "median_seconds": statistics.median(seconds)}, handle)


def make_divisible(channels, divisor=8):
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def make_checkpoint(args):
    import mxnet as mx
    import numpy as np

    def scaled(channels):
        return channels if args.width == 1.0 else make_divisible(channels * args.width)

    bn_options = {"fix_gamma": False, "momentum": 0.9}
    if args.body_eps is not None:
        bn_options["eps"] = args.body_eps

    def act(x, name):
        if args.act == "prelu":
            return mx.sym.LeakyReLU(data=x, act_type="prelu", name=name)
        return mx.sym.Activation(data=x, act_type="relu", name=name)

    def conv(x, channels, kernel, stride=1, groups=1, pad=None, linear=False, name=None):
        pad = kernel // 2 if pad is None else pad
        x = mx.sym.Convolution(
            data=x,
            num_filter=channels,
            kernel=(kernel, kernel),
            stride=(stride, stride),
            pad=(pad, pad),
            num_group=groups,
            no_bias=True,
            name=f"{name}_conv2d",
        )
        x = mx.sym.BatchNorm(data=x, name=f"{name}_batchnorm", **bn_options)
        return x if linear else act(x, f"{name}_relu")

    def bottleneck(x, in_channels, expansion, channels, stride, name):
        hidden = in_channels * expansion
        shortcut = x
        x = conv(x, hidden, 1, name=f"{name}_conv_sep")
        x = conv(x, hidden, 3, stride, groups=hidden, name=f"{name}_conv_dw")
        x = conv(x, channels, 1, linear=True, name=f"{name}_conv_proj")
        if stride == 1 and in_channels == channels:
            x = x + shortcut
        return x

    rows = [(2, 64, 2), (4, 128, 2), (2, 128, 1), (4, 128, 2), (2, 128, 1)]
    repeats = [int(count) for count in args.blocks.split(",")]

    data = mx.sym.Variable("data")
    x = (data - 127.5) * 0.0078125
    if args.identity:
        x = mx.sym.identity(data=x, name="id")
    x = conv(x, scaled(64), 3, 2, name="conv_1")
    x = conv(x, scaled(64), 3, 1, groups=scaled(64), name="conv_2_dw")
    channels = scaled(64)
    for row, ((expansion, out, stride), count) in enumerate(zip(rows, repeats)):
        for block in range(count):
            x = bottleneck(
                x,
                channels,
                expansion,
                scaled(out),
                stride if block == 0 else 1,
                name=f"row{row}_block{block}",
            )
            channels = scaled(out)
    x = conv(x, scaled(512), 1, name="conv_6sep")
    x = conv(x, scaled(512), 7, groups=scaled(512), pad=0, linear=True, name="conv_6dw7_7")
    if args.dropout:
        x = mx.sym.Dropout(data=x, p=0.4, name="dropout0")
    if args.embedding == "dense":
        x = mx.sym.FullyConnected(data=x, num_hidden=args.embedding_size, name="pre_fc1")
    else:
        x = mx.sym.Convolution(
            data=x, num_filter=args.embedding_size, kernel=(1, 1), name="conv_6_f"
        )
        x = mx.sym.Flatten(data=x, name="flatten0")
    embedding = mx.sym.BatchNorm(
        data=x, fix_gamma=not args.fc1_gamma, eps=2e-5, momentum=0.9, name="fc1"
    )
    symbol = embedding
    if args.classes:
        # ArcFace's head as insightface trains it: fc7 on normalised vectors.
        weight = mx.sym.Variable("fc7_weight", shape=(args.classes, args.embedding_size))
        normalized = mx.sym.L2Normalization(embedding, mode="instance", name="fc1n") * 64.0
        fc7 = mx.sym.FullyConnected(
            data=normalized,
            weight=mx.sym.L2Normalization(weight, mode="instance"),
            no_bias=True,
            num_hidden=args.classes,
            name="fc7",
        )
        label = mx.sym.Variable("softmax_label")
        softmax = mx.sym.SoftmaxOutput(data=fc7, label=label, name="softmax")
        symbol = mx.sym.Group([mx.sym.BlockGrad(embedding), softmax])

    rng = np.random.RandomState(args.seed)
    data_shapes = {"data": (1, 3, 112, 112)}
    if args.classes:
        data_shapes["softmax_label"] = (1,)
    arg_shapes, _, aux_shapes = symbol.infer_shape(**data_shapes)
    arg_params, aux_params = {}, {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name in data_shapes:
            continue
        if name.endswith("_gamma") and "relu" in name:
            value = rng.uniform(0.0, 0.5, shape)  # PReLU slopes
        elif name.endswith("_gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("_beta", "_bias")):
            value = rng.normal(0.0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        arg_params[name] = mx.nd.array(value.astype(np.float32))
    for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes):
        if name.endswith("moving_var"):
            value = rng.uniform(0.5, 2.0, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        aux_params[name] = mx.nd.array(value.astype(np.float32))
    mx.model.save_checkpoint(args.prefix, 0, symbol, arg_params, aux_params)


def load_params(args):
    import mxnet as mx
    import numpy as np

    arrays = mx.nd.load(args.params)
    if isinstance(arrays, list):
        arrays = {str(index): array for index, array in enumerate(arrays)}
    np.savez(args.out, **{name: array.asnumpy() for name, array in arrays.items()})


def main(argv=None):
    args = parse_args(argv)
    {"embed": embed, "make-checkpoint": make_checkpoint, "load-params": load_params}[
        args.command
    ](args)


if __name__ == "__main__":
    main()
