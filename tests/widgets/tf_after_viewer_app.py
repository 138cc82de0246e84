"""A fresh napari session that loads TensorFlow only after its OpenGL canvas exists.

Run by ``test_tf_after_viewer.py`` in a subprocess: it opens a viewer, draws the canvas,
docks every plugin widget (importing them must not import TensorFlow), trains a tiny U-Net
and predicts through the widgets on the ISBI sample, saves a screenshot to the path given
as its argument and exits with code 0.  A crash (segmentation fault) or any failure gives
another code.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

# The same widgets, in the same order, as the README's GUI command docks.
from napari_dlbio.demo import WIDGETS

TINY = {"network.depth": 2, "network.base_filters": 4, "patch_size": 32, "batch_size": 2}


def wait_for(widget, timeout_s: float = 240.0) -> None:
    """Run the Qt event loop until the widget's job has finished."""
    deadline = time.monotonic() + timeout_s
    while widget.job is None or widget.job.running:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{type(widget).__name__} did not finish in {timeout_s} s")
        QApplication.processEvents()
        time.sleep(0.01)


def main(screenshot: Path) -> int:
    viewer = napari.Viewer()
    viewer.open_sample("napari-dlbio", "isbi2012")
    viewer.screenshot(canvas_only=True)  # the canvas has drawn: Mesa's LLVM is loaded now
    docked = {
        name: viewer.window.add_plugin_dock_widget("napari-dlbio", name)[1] for name in WIDGETS
    }
    # Docking Train / Predict starts importing TensorFlow in the background: after the
    # canvas has drawn, which is the order that crashed without RTLD_DEEPBIND.
    image, annotation = viewer.layers["ISBI 2012 EM"], viewer.layers["membrane annotations"]

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

    viewer.screenshot(path=str(screenshot), canvas_only=False)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
