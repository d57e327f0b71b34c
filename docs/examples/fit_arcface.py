"""Train MobileFaceNet with ArcFace using only the library and `model.fit`.

    python docs/examples/fit_arcface.py --data-dir DATA [--steps 200] [--batch-size 64]

DATA is an insightface dataset folder (`train.rec`, `train.idx`,
`property`, and optionally `*.bin` verification sets); without one, run
`python cli.py data synth --out DATA` first. This is what
`python cli.py train --stage arcface` does, without checkpoints, plots or
recipes.
"""

import argparse
import logging
from pathlib import Path

import keras

import mfn_tf


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    # Data: ((images 0-255, labels), labels) batches, shuffled and mirrored.
    data = mfn_tf.open_training_data(args.data_dir)
    dataset = mfn_tf.make_dataset(data, args.batch_size, seed=0)

    # Model: the backbone nested under its name, then ArcFace on
    # (embedding, label). The head is named fc7 as in insightface, which
    # is what the weight-decay multipliers look for.
    backbone = mfn_tf.MobileFaceNet(width_multiplier=args.width_multiplier)
    image = keras.Input((112, 112, 3), name="image")
    label = keras.Input((), dtype="int32", name="label")
    logits = mfn_tf.ArcFace(data.num_classes, s=64.0, m=0.5, name="fc7")(
        [backbone(image), label]
    )
    model = keras.Model([image, label], logits)

    # Momentum SGD with MXNet's weight decay: wd * mult * w joins the gradient.
    model.compile(
        optimizer=mfn_tf.MXNetSGD(learning_rate=0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
        jit_compile=False,
    )

    interval = max(1, args.steps // 4)
    callbacks = [
        mfn_tf.StepLearningRate(base_lr=0.1, lr_steps=[args.steps * 3 // 4]),
        mfn_tf.WeightDecayMultipliers(wd=4e-5, fc7_mult=10.0),
    ]
    targets = {path.stem: path for path in sorted(args.data_dir.glob("*.bin"))}
    if targets:
        # First in the list, so that later callbacks see its figures in logs.
        callbacks.insert(0, mfn_tf.VerificationCallback(targets))

    # One Keras epoch per verification interval, as insightface counts.
    history = model.fit(
        dataset,
        epochs=args.steps // interval,
        steps_per_epoch=interval,
        callbacks=callbacks,
        shuffle=False,
        verbose=2,
    )
    print({key: [round(float(v), 4) for v in values] for key, values in history.history.items()})


if __name__ == "__main__":
    main()
