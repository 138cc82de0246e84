"""The README's main job on the built-in ISBI 2012 sample.

With a screen: napari opens with the sample loaded, the plugin's widgets docked and the
built-in membrane model chosen in Predict & inspect and Correct & fine-tune.  Without one
(or with ``--headless``): the ``dlbio`` engine predicts the membrane mask of the sample with
the built-in model, fine-tunes that model briefly on the sample's labels, predicts again,
writes everything under ``runs/`` and prints how good each mask is (IoU and Dice per
class), what was written where, and the command that opens the result in napari.  Run it as
``python -m napari_dlbio.demo [--headless] [--json] [--verbose]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

WIDGETS = ("Data & annotation", "Train", "Predict & inspect", "Correct & fine-tune", "Export")
ISBI_LABEL_VALUES = "255=background,0=membrane"
BUILTIN_MODEL = "builtin:em-membranes"


def run_headless(
    out_dir: Path, time_budget_s: float, *, as_json: bool = False, verbose: bool = False
) -> Path:
    """Predict with the built-in model, fine-tune it, predict again; return the mask's path.

    Parameters
    ----------
    out_dir
        Folder for the masks, the probabilities and the fine-tuned model folder.
    time_budget_s
        Seconds of fine-tuning on the sample's labels.
    as_json
        End with both evaluations as one JSON object on one line (``{"built_in": ...,
        "fine_tuned": ...}``, each as ``dlbio evaluate --json`` prints it) instead of tables.
    verbose
        Let TensorFlow's own log lines through (``dlbio --verbose``).
    """
    from napari_dlbio._sample_data import ISBI_IMAGE, ISBI_LABELS
    from napari_dlbio.core.builtin_models import builtin_model

    out_dir = out_dir.absolute()  # the printed napari command works from any folder
    card = builtin_model(BUILTIN_MODEL).path / "README.md"
    model_dir = out_dir / "fine-tuned model"
    mask, probabilities = out_dir / "mask.tif", out_dir / "probabilities.tif"
    tuned_mask = out_dir / "fine-tuned mask.tif"
    objects = out_dir / "objects"
    options = ["--verbose"] if verbose else []
    labels = ["--labels", str(ISBI_LABELS), "--label-values", ISBI_LABEL_VALUES]

    def predict(model: str, out: Path, *extra: str) -> None:
        _dlbio([*options, "predict", "--model", model, "--images", str(ISBI_IMAGE),
                "--out", str(out), *extra])  # fmt: skip

    def evaluate(model: str) -> str:
        argv = [*options, "evaluate", "--model", model, "--images", str(ISBI_IMAGE), *labels]
        return _dlbio_output([*argv, "--json"] if as_json else argv)

    predict(BUILTIN_MODEL, mask, "--probabilities", str(probabilities), "--instances", str(objects))
    built_in = evaluate(BUILTIN_MODEL)
    _dlbio([*options, "train", "--from", BUILTIN_MODEL, "--images", str(ISBI_IMAGE), *labels,
            "--out", str(model_dir), "--time-budget", str(time_budget_s)])  # fmt: skip
    predict(str(model_dir), tuned_mask)
    fine_tuned = evaluate(str(model_dir))
    written = (
        f"\nWritten:\n  Membrane mask: {mask}\n  Probabilities: {probabilities}\n"
        f"  Cells and their measurements: {objects / 'cells.tif'}, {objects / 'objects.csv'}\n"
        f"  Fine-tuned model folder: {model_dir}\n  Fine-tuned mask: {tuned_mask}\n\n"
        "Open the image with the mask (as labels) in napari:\n"
        f"  {napari_command(ISBI_IMAGE, mask)}\n"
    )
    if as_json:
        sys.stdout.write(written)
        reports = {"built_in": json.loads(built_in), "fine_tuned": json.loads(fine_tuned)}
        sys.stdout.write(json.dumps(reports) + "\n")
        return mask
    sys.stdout.write(
        f"\nThe built-in model {BUILTIN_MODEL} on the sample (ISBI 2012 slices 0-4). It was "
        "trained on all 30 ISBI slices, these among them, so this is not a score on unseen "
        f"images; its card gives those:\n  {card}\n\n{built_in}"
        f"\nAfter fine-tuning it for {time_budget_s:g} s on the sample's labels:\n\n"
        f"{fine_tuned}{written}"
    )
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


def _dlbio_output(argv: list[str]) -> str:
    """Run one ``dlbio`` command in this process and return what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        _dlbio(argv)
    return printed.getvalue()


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
    parser.add_argument("--time-budget", type=float, default=30.0, metavar="SECONDS",
                        help="headless: fine-tuning seconds (default 30)")  # fmt: skip
    parser.add_argument("--json", action="store_true",
                        help="headless: both evaluations as one JSON line, not tables")  # fmt: skip
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
