"""PNG plots of a training run from its `metrics.csv` and `verification.csv`."""

import csv
import math
from pathlib import Path


def _read_columns(path):
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(math.nan)
    return columns


def plot_training(run_dir, title=None):
    """Draw loss, training accuracy, LR and verification accuracy against
    the step into `run_dir/training.png`, and each panel into its own PNG
    (`loss.png`, `accuracy.png`, `lr.png`, `verification.png`).

    Returns:
        The path of `training.png`, or None when there is nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train = _read_columns(run_dir / "metrics.csv")
    verification = _read_columns(run_dir / "verification.csv")
    if not train.get("step"):
        return None

    panels = [
        ("loss", "Training loss", lambda ax: ax.plot(train["step"], train["loss"])),
        ("accuracy", "Training accuracy (with margin)", lambda ax: ax.plot(train["step"], train["acc"])),
        ("lr", "Learning rate", lambda ax: ax.semilogy(train["step"], train["lr"])),
        ("verification", "Verification Accuracy-Flip", lambda ax: _plot_verification(ax, verification)),
    ]
    figure, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (_, label, draw) in zip(axes.flat, panels):
        draw(ax)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    combined = run_dir / "training.png"
    figure.savefig(combined, dpi=100)
    plt.close(figure)

    for name, label, draw in panels:
        figure, ax = plt.subplots(figsize=(6, 4))
        draw(ax)
        ax.set_title(f"{title}: {label}" if title else label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(run_dir / f"{name}.png", dpi=100)
        plt.close(figure)
    return combined


def _plot_verification(ax, verification):
    steps = verification.get("step", [])
    plotted = False
    for key, values in verification.items():
        if key.endswith("_accuracy") and steps:
            ax.plot(steps, values, marker="o", label=key[: -len("_accuracy")])
            plotted = True
    if plotted:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no verification yet", ha="center", va="center", transform=ax.transAxes)
