"""mfn-tf command line: `python cli.py COMMAND --help`.

Commands are imported when they run, so `--help` and the data tools start
without loading TensorFlow.
"""

import importlib
import logging
import os

import click

# TensorFlow's C++ start-up messages (oneDNN, CUDA probing) hide the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# name: (module, attribute, one-line help)
COMMANDS = {
    "data": ("mfn_tf.commands.data", "data", "Pack, inspect and generate datasets."),
    "train": ("mfn_tf.commands.train", "train", "Train one stage of the recipe."),
    "eval": ("mfn_tf.commands.evaluate", "evaluate", "Verification accuracy on .bin sets."),
    "demo": ("mfn_tf.commands.demo", "demo", "Run the whole pipeline on synthetic data."),
    "import-mxnet": (
        "mfn_tf.commands.import_mxnet",
        "import_mxnet",
        "Import an insightface MXNet checkpoint.",
    ),
    "convert": ("converters.cli", "convert", "Export TFLite, ONNX and ncnn models."),
    "bench": ("bench.cli", "bench", "Benchmark converted models."),
    "verify-arm": (
        "converters.arm.cli",
        "verify_arm",
        "Check converted models on emulated aarch64.",
    ),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when it runs."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            raise click.ClickException(
                f"Command {name!r} needs the module {error.name!r}, which is "
                "not installed. Run `make setup`, or "
                '`pip install -e ".[convert,test]"`.'
            ) from error
        return getattr(module, attribute)

    def format_commands(self, ctx, formatter):
        # The stored one-line help avoids importing every command (and
        # TensorFlow) to print the list.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose):
    """MobileFaceNet in Keras: train, evaluate, import, convert, benchmark."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


if __name__ == "__main__":
    main()
