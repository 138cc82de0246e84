"""Screenshots of napari with each napari-dlbio widget docked, for the README.

Opens the ISBI 2012 sample, docks one widget at a time, drives it like a user (creates an
annotation layer, predicts and scores the stack with the built-in membrane model,
fine-tunes that model for 30 seconds, chooses what to export) and saves
``docs/screenshot-<widget>.png`` of the whole window.  With the PlantVillage sample it
saves the Predict widget with the built-in leaf classifier's classes per image and a
Grad-CAM overlay.  Needs a display:

    QT_QPA_PLATFORM=xcb xvfb-run -a .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FINE_TUNING = {"steps_per_epoch": 10, "time_budget_s": 30.0}


def wait_for(widget: Any, timeout_s: float = 600.0) -> None:
    """Run the Qt event loop until the widget's job has finished."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while widget.job is None or widget.job.running:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{type(widget).__name__} did not finish in {timeout_s} s")
        QApplication.processEvents()
        time.sleep(0.01)


def settle(viewer: Any) -> None:
    """Let Qt lay out and paint the window before a screenshot."""
    from qtpy.QtWidgets import QApplication

    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.screenshot(canvas_only=True)


def save(viewer: Any, folder: Path, name: str) -> Path:
    """Save the whole window as ``screenshot-<name>.png``."""
    settle(viewer)
    path = folder / f"screenshot-{name}.png"
    viewer.screenshot(path=str(path), canvas_only=False)
    return path


def dock(viewer: Any, name: str) -> tuple[Any, Any]:
    """Dock the plugin widget called ``name``; return (dock, widget)."""
    return viewer.window.add_plugin_dock_widget("napari-dlbio", name)


def segmentation_shots(folder: Path) -> list[Path]:
    """Data & annotation, Train, Predict & inspect and Export on the ISBI sample."""
    import napari

    viewer = napari.Viewer(title="napari-dlbio")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-dlbio", "isbi2012")
    image, annotation = viewer.layers["ISBI 2012 EM"], viewer.layers["ISBI 2012 ground truth"]
    shots = []

    annotation.visible = False  # show the new, sparse annotation on the bare EM image
    data_dock, data = dock(viewer, "Data & annotation")
    data.image_combo.select(image)
    data.classes_edit.setText("background, membrane, mitochondria")
    data.create_annotation()
    painted = viewer.layers["ISBI 2012 EM annotation"]
    painted.data[2, 200:260, 150:330] = 2  # a stroke of membrane, as a user would paint
    painted.data[2, 300:330, 300:420] = 3
    painted.refresh()
    viewer.dims.set_point(0, 2)
    shots.append(save(viewer, folder, "data"))
    viewer.window.remove_dock_widget(data_dock)
    viewer.layers.remove(painted)
    annotation.visible = True

    predict_dock, predict = dock(viewer, "Predict & inspect")
    predict.image_combo.select(image)
    predict.model_combo.setCurrentText("built-in em-membranes")
    predict.scope_combo.setCurrentText("whole stack")
    predict.metrics.reference_combo.select(annotation)
    predict.predict_button.click()
    wait_for(predict)
    annotation.visible = False
    viewer.dims.set_point(0, 1)
    shots.append(save(viewer, folder, "predict"))
    viewer.window.remove_dock_widget(predict_dock)

    train_dock, train = dock(viewer, "Train")
    train.image_combo.select(image)
    train.annotation_combo.select(annotation)
    train.start_combo.setCurrentText("built-in em-membranes")
    for key, value in FINE_TUNING.items():
        train.segmentation_form.set_value(key, value)
    train.train_button.click()
    wait_for(train)
    shots.append(save(viewer, folder, "train"))
    viewer.window.remove_dock_widget(train_dock)

    _, export = dock(viewer, "Export")
    export.mask_combo.select(viewer.layers["ISBI 2012 EM mask"])
    export.mask_path.setText(str(Path.home() / "membrane-mask.tif"))
    export.image_combo.select(viewer.layers["ISBI 2012 EM P(membrane)"])
    export.image_path.setText(str(Path.home() / "membrane-probability.tif"))
    export.metrics_path.setText(str(Path.home() / "membrane-iou.csv"))
    export.model_path.setText(str(Path.home() / "membrane-unet"))
    shots.append(save(viewer, folder, "export"))
    viewer.close()
    return shots


def classifier_shot(folder: Path) -> Path:
    """Predict & inspect on the PlantVillage sample: classes per image and Grad-CAM."""
    import napari

    viewer = napari.Viewer(title="napari-dlbio")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-dlbio", "plantvillage")
    leaves = viewer.layers["PlantVillage leaves"]
    _, predict = dock(viewer, "Predict & inspect")
    predict.image_combo.select(leaves)
    predict.model_combo.setCurrentText("built-in plantvillage-15")
    predict.scope_combo.setCurrentText("whole stack")
    predict.predict_button.click()
    wait_for(predict)
    viewer.dims.set_point(0, 7)
    predict.gradcam_button.click()
    wait_for(predict)
    path = save(viewer, folder, "predict-leaves")
    viewer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    """Take the screenshots; print the files written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder of the PNGs")
    parser.add_argument("--no-leaves", action="store_true", help="skip the classifier shot")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    shots = segmentation_shots(args.out)
    if not args.no_leaves:
        shots.append(classifier_shot(args.out))
    sys.stdout.write("".join(f"{shot}\n" for shot in shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
