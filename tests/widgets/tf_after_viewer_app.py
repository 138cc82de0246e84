"""A fresh napari session that trains, predicts, fine-tunes and exports without ever
importing TensorFlow: the engine process does the deep learning.

Run by ``test_tf_after_viewer.py`` in a subprocess: it opens a viewer, docks every plugin
widget, trains a tiny U-Net, predicts, fine-tunes and exports it through the widgets on the
ISBI sample, checks that neither TensorFlow nor Keras was imported in this process, then
draws its canvas for the first time (the image, the results, canvas text, points and
shapes), saves a screenshot to the path given as its argument and exits with code 0.  A
crash (segmentation fault) or any failure gives another code.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_dlbio.core.events import RunState

# The same widgets, in the same order, as the README's GUI command docks.
from napari_dlbio.demo import WIDGETS

TINY = {"network.depth": 2, "network.base_filters": 4, "patch_size": 32, "batch_size": 2}


def wait_for(widget, timeout_s: float = 400.0) -> None:
    """Run the Qt event loop until the widget's job has finished (a hang guard, not a
    deadline: the test gives the whole session 500 s)."""
    deadline = time.monotonic() + timeout_s
    while widget.job is None or widget.job.running:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{type(widget).__name__} did not finish in {timeout_s} s")
        QApplication.processEvents()
        time.sleep(0.01)


def main(screenshot: Path) -> int:
    # Hidden: Mesa and its LLVM load with the canvas now, but nothing is drawn until
    # TensorFlow has loaded, so every LLVM call Mesa makes is bound after that (the order
    # of a widget test, and of a user who trains before the window first paints).
    viewer = napari.Viewer(show=False)
    viewer.open_sample("napari-dlbio", "isbi2012")
    docked = {
        name: viewer.window.add_plugin_dock_widget("napari-dlbio", name)[1] for name in WIDGETS
    }
    image, annotation = viewer.layers["ISBI 2012 EM"], viewer.layers["ISBI 2012 ground truth"]

    train = docked["Train"]
    train.image_combo.select(image)
    train.annotation_combo.select(annotation)
    for key, value in {**TINY, "epochs": 1, "steps_per_epoch": 2}.items():
        train.segmentation_form.set_value(key, value)
    train.train_button.click()
    wait_for(train)
    if train.outcome is None:
        raise RuntimeError(f"training ended as {train.job.state}")

    predict = docked["Predict & inspect"]
    predict.image_combo.select(image)
    predict.metrics.reference_combo.select(annotation)
    predict.predict_button.click()
    wait_for(predict)
    if "ISBI 2012 EM mask" not in viewer.layers:
        raise RuntimeError(f"prediction ended as {predict.job.state} without a mask")

    refine = docked["Correct & fine-tune"]
    refine.image_combo.select(image)
    refine.annotation_combo.select(annotation)
    refine.burst.seconds_spin.setValue(1.0)
    refine.fine_tune_button.click()
    wait_for(refine)
    if refine.job.state is not RunState.DONE:
        raise RuntimeError(f"fine-tuning ended as {refine.job.state}")

    export = docked["Export"]
    export.model_path.setText(str(screenshot.with_name("exported model")))
    export.model_button.click()
    wait_for(export)
    if export.job.state is not RunState.DONE:
        raise RuntimeError(f"exporting the model ended as {export.job.state}")

    loaded = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
    if loaded:
        raise RuntimeError(f"napari's process imported {', '.join(loaded)}")

    overlay = viewer.canvas.overlays.text
    overlay.visible = True
    overlay.text = "Fine-tuned: QZXW kjv 0123456789"
    viewer.add_points([[0, 100, 100], [0, 200, 300]], size=20)
    viewer.add_shapes([[[0, 50, 50], [0, 50, 150], [0, 150, 100]]], shape_type="polygon")
    viewer.dims.set_point(0, 0)  # the slice the points and shapes are on
    viewer.window.show()  # the first paint
    viewer.reset_view()
    viewer.screenshot(path=str(screenshot), canvas_only=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
