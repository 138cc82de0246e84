"""The classes a classifier predicted for the images of a leaf stack: table + canvas text.

Part of the Predict & inspect widget.  The rows are kept in the stack's
``metadata[PREDICTIONS_KEY]`` (predicting some images again replaces their rows), listed in
a table, and the class of the image the viewer shows is written on the canvas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.layers import Layer
from qtpy.QtWidgets import QGroupBox, QPushButton, QTableWidget, QVBoxLayout

from napari_dlbio._layers import classification_text
from napari_dlbio._widgets._common import (
    connect_while_alive,
    current_index,
    fill_table,
    show_canvas_text,
)

PREDICTIONS_KEY = "dlbio_predictions"
CLASS_COLUMNS = ("image", "predicted", "probability", "true", "trained on")


class ClassesPanel(QGroupBox):
    """The predicted class of each image of the chosen leaf stack, and the Grad-CAM button.

    Parameters
    ----------
    viewer
        The napari viewer.
    image
        Gives the leaf stack the user chose (the Predict widget's image field).
    """

    def __init__(self, viewer: Any, image: Callable[[], Layer | None]) -> None:
        super().__init__("Classes per image")
        self.viewer = viewer
        self._image = image
        self.table = QTableWidget()
        self.gradcam_button = QPushButton("Grad-CAM of the current image")
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(self.gradcam_button)
        connect_while_alive(viewer.dims.events.current_step, self.show_canvas_text, self)

    def show_rows(self, image: Layer, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep the newly predicted ``rows`` with those of the other images of ``image``
        and list them all; return them, sorted by image."""
        predicted = {row["image"] for row in rows}
        previous = image.metadata.get(PREDICTIONS_KEY, [])
        kept = [row for row in previous if row["image"] not in predicted] + rows
        kept.sort(key=lambda row: row["image"])
        image.metadata[PREDICTIONS_KEY] = kept
        fill_table(self.table, kept, CLASS_COLUMNS)
        return kept

    def show_canvas_text(self, *_: Any) -> None:
        """Write the predicted class of the image the viewer shows (if any) on the canvas."""
        image = self._image()
        if image is None or PREDICTIONS_KEY not in image.metadata:
            return
        rows = image.metadata[PREDICTIONS_KEY]
        show_canvas_text(self.viewer, classification_text(rows, current_index(self.viewer, image)))
