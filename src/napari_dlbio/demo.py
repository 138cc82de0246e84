"""The README's main job on the built-in ISBI 2012 sample.

With a screen: napari opens with the sample loaded and the plugin's widgets docked.
Without one (or with ``--headless``): the ``dlbio`` engine trains a U-Net on the sample,
predicts the membrane mask, writes it under ``runs/`` and prints where it went and how good
it is.  Run it as ``python -m napari_dlbio.demo [--headless]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

WIDGETS = ("Data & annotation", "Train", "Predict & inspect", "Correct & fine-tune", "Export")
ISBI_LABEL_VALUES = "255=background,0=membrane"


def run_headless(out_dir: Path, time_budget_s: float) -> Path:
    """Train, predict and evaluate on the sample with the CLI; return the mask's path."""
    from napari_dlbio import cli
    from napari_dlbio._sample_data import ISBI_IMAGE, ISBI_LABELS

    model_dir, mask, probabilities = (
        out_dir / "model",
        out_dir / "mask.tif",
        out_dir / "probabilities.tif",
    )
    steps = [
        ["train", "--images", str(ISBI_IMAGE), "--labels", str(ISBI_LABELS),
         "--label-values", ISBI_LABEL_VALUES, "--out", str(model_dir),
         "--time-budget", str(time_budget_s)],
        ["predict", "--model", str(model_dir), "--images", str(ISBI_IMAGE),
         "--out", str(mask), "--probabilities", str(probabilities)],
        ["evaluate", "--model", str(model_dir), "--images", str(ISBI_IMAGE),
         "--labels", str(ISBI_LABELS), "--label-values", ISBI_LABEL_VALUES, "--json"],
    ]  # fmt: skip
    for step in steps:
        code = cli.main(step)
        if code != 0:
            raise SystemExit(code)
    sys.stdout.write(
        f"\nModel folder:  {model_dir}\nMembrane mask: {mask}\nProbabilities: {probabilities}\n"
        "(The scores above are measured on the 5 sample slices the model was trained on.)\n"
    )
    return mask


def run_gui() -> int:
    """Open napari with the ISBI sample and every napari-dlbio widget docked."""
    import napari

    viewer = napari.Viewer(title="napari-dlbio")
    viewer.open_sample("napari-dlbio", "isbi2012")
    for name in WIDGETS:
        viewer.window.add_plugin_dock_widget("napari-dlbio", name)
    napari.run()
    return 0


def has_display() -> bool:
    """Whether a GUI can open (an X11 or Wayland display on Linux; always elsewhere)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m napari_dlbio.demo", description=__doc__)
    parser.add_argument("--headless", action="store_true", help="no GUI, even with a screen")
    parser.add_argument("--out", type=Path, help="output folder (default: a new runs/demo-<time>)")
    parser.add_argument("--time-budget", type=float, default=120.0, metavar="SECONDS",
                        help="training time for the headless job (default 120)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.headless and has_display():
        return run_gui()
    out_dir = args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    run_headless(out_dir, args.time_budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
