"""ROC plot of verification results (matplotlib, rendered with Agg)."""

import logging
from pathlib import Path

import numpy as np

from mfn_tf.evaluation.verification import FAR_TARGET

logger = logging.getLogger(__name__)


def save_roc_plot(curves, path, far_target=FAR_TARGET, title="Verification ROC"):
    """Draw one ROC per target (TAR against FAR, FAR on a log axis) to `path`.

    Args:
        curves: mapping from target name to a `RocCurve`.
        path: the image file; its suffix selects the format (`.png`, `.svg`).
        far_target: FAR marked with a vertical line.

    A curve without both same and different pairs has no ROC and is left out
    with a warning.
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    min_far = 1.0
    min_tar = 1.0
    plotted = 0
    for name, curve in curves.items():
        if np.isnan(curve.far).any() or np.isnan(curve.tar).any():
            logger.warning("%s: no ROC without both same and different pairs", name)
            continue
        # A log axis cannot show FAR = 0; the curve starts at the first
        # accepted different pair.
        visible = curve.far > 0
        axes.plot(
            curve.far[visible],
            curve.tar[visible],
            label=f"{name} (AUC {curve.auc:.4f})",
        )
        if visible.any():
            min_far = min(min_far, curve.far[visible].min())
            min_tar = min(min_tar, curve.tar[visible].min())
        plotted += 1
    axes.axvline(far_target, color="gray", linestyle="--", linewidth=1,
                 label=f"FAR = {far_target:g}")
    axes.set_xscale("log")
    axes.set_xlim(min(min_far, far_target) / 2, 1.0)
    # Good models sit near TAR 1, so the TAR axis starts just below the
    # lowest plotted point, on a 0.05 step.
    axes.set_ylim(max(0.0, np.floor((min_tar - 0.01) / 0.05) * 0.05), 1.002)
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("true accept rate (TAR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if not plotted:
        axes.text(0.5, 0.5, "no target has both same and different pairs",
                  transform=axes.transAxes, ha="center")
    axes.legend(loc="lower right")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
