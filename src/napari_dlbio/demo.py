"""The README's main job on the built-in ISBI 2012 sample.

With a screen: napari opens with the sample loaded and the plugin's widgets docked.
Without one (or with ``--headless``): the ``dlbio`` engine trains a U-Net on the sample,
predicts the membrane mask, writes it under ``runs/`` and prints a table of how good it is
(IoU and Dice per class), what was written where, and the command that opens the result in
napari.  Run it as ``python -m napari_dlbio.demo [--headless] [--json] [--verbose]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

WIDGETS = ("Data & annotation", "Train", "Predict & inspect", "Correct & fine-tune", "Export")
ISBI_LABEL_VALUES = "255=background,0=membrane"


def run_headless(
    out_dir: Path, time_budget_s: float, *, as_json: bool = False, verbose: bool = False
) -> Path:
    """Train, predict and evaluate on the sample with the CLI; return the mask's path.

    Parameters
    ----------
    out_dir
        Folder for the model folder, the mask and the probabilities.
    time_budget_s
        Training time in seconds.
    as_json
        End with the evaluation as one JSON object on one line (``dlbio evaluate --json``)
        instead of the table.
    verbose
        Let TensorFlow's own log lines through (``dlbio --verbose``).
    """
    from napari_dlbio._sample_data import ISBI_IMAGE, ISBI_LABELS

    out_dir = out_dir.absolute()  # the printed napari command works from any folder
    model_dir, mask, probabilities = (
        out_dir / "model",
        out_dir / "mask.tif",
        out_dir / "probabilities.tif",
    )
    options = ["--verbose"] if verbose else []
    train, predict, evaluate = (
        ["train", "--images", str(ISBI_IMAGE), "--labels", str(ISBI_LABELS),
         "--label-values", ISBI_LABEL_VALUES, "--out", str(model_dir),
         "--time-budget", str(time_budget_s)],
        ["predict", "--model", str(model_dir), "--images", str(ISBI_IMAGE),
         "--out", str(mask), "--probabilities", str(probabilities)],
        ["evaluate", "--model", str(model_dir), "--images", str(ISBI_IMAGE),
         "--labels", str(ISBI_LABELS), "--label-values", ISBI_LABEL_VALUES],
    )  # fmt: skip
    _dlbio([*options, *train])
    _dlbio([*options, *predict])
    written = (
        f"\nWritten:\n  Model folder:  {model_dir}\n  Membrane mask: {mask}\n"
        f"  Probabilities: {probabilities}\n\n"
        "Open the image with the mask (as labels) in napari:\n"
        f"  {napari_command(ISBI_IMAGE, mask)}\n"
    )
    if as_json:
        sys.stdout.write(written)
        _dlbio([*options, *evaluate, "--json"])
    else:
        sys.stdout.write(
            "\nHow well the mask matches the sample's labels (measured on the 5 slices the "
            "model was trained on):\n"
        )
        _dlbio([*options, *evaluate])
        sys.stdout.write(written)
    return mask


def napari_command(*paths: Path) -> str:
    """The shell command that opens ``paths`` in this environment's napari, read by napari-dlbio.

    Through the plugin's reader a mask written by ``dlbio predict`` opens as a Labels layer
    (napari's own TIFF reader would open it as an image).
    """
    napari = shutil.which("napari")
    if napari is not None and Path(napari).parent == Path(sys.executable).parent:
        program = ["napari"]
    else:  # napari on the PATH is another environment's, or there is none
        program = [sys.executable, "-m", "napari"]
    return shlex.join([*program, "--plugin", "napari-dlbio", *map(str, paths)])


def _dlbio(argv: list[str]) -> None:
    """Run one ``dlbio`` command in this process; its failure ends the demo."""
    from napari_dlbio import cli

    code = cli.main(argv)
    if code != 0:
        raise SystemExit(code)


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
    parser.add_argument("--json", action="store_true",
                        help="headless: the evaluation as one JSON line, not a table")  # fmt: skip
    parser.add_argument("--verbose", action="store_true",
                        help="headless: also show TensorFlow's own log lines")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.headless and has_display():
        return run_gui()
    out_dir = args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    run_headless(out_dir, args.time_budget, as_json=args.json, verbose=args.verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
