"""Export: the mask (TIFF stack or PNG slices), probabilities, the metrics table, the objects
(as ``dlbio predict --instances`` writes them), the model (a model folder or a bioimage.io
package)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_dlbio._layers import GRAD_CAM, OBJECTS, PREDICTION, PROBABILITY, ROLE_KEY, UNCERTAINTY
from napari_dlbio._object_layers import OBJECT_KIND_KEY
from napari_dlbio._widgets._base import JobWidget
from napari_dlbio._widgets._common import image_data
from napari_dlbio._widgets._export_jobs import (
    export_image,
    export_mask,
    export_metrics,
    export_model,
    export_objects,
    export_package,
    objects_table,
)
from napari_dlbio._widgets._fields import LayerCombo, PathEdit, has_role
from napari_dlbio._widgets._model_picker import ModelPicker
from napari_dlbio._widgets._worker import Job, JobFunction
from napari_dlbio.core.errors import DlbioError
from napari_dlbio.core.events import RunState

TIFF, PNGS = "TIFF stack", "PNG slices (a new folder)"


class ExportWidget(JobWidget):
    """Write results to new files; nothing existing is ever overwritten."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.mask_combo = LayerCombo(napari_viewer, Labels, prefer=has_role(PREDICTION))
        self.format_combo = QComboBox()
        self.format_combo.addItems([TIFF, PNGS])
        self.mask_path = PathEdit(folder=False)
        self.mask_button = QPushButton("Export mask")
        self.image_combo = LayerCombo(
            napari_viewer, Image, prefer=has_role(PROBABILITY, UNCERTAINTY, GRAD_CAM)
        )
        self.image_path = PathEdit(folder=False)
        self.image_button = QPushButton("Export as TIFF")
        self.metrics_path = PathEdit(folder=False)
        self.metrics_button = QPushButton("Export metrics CSV")
        self.objects_combo = LayerCombo(napari_viewer, Labels, prefer=has_role(OBJECTS))
        self.objects_path = PathEdit(folder=True)
        self.objects_path.edit.setPlaceholderText("a folder; no file there is ever replaced")
        self.objects_button = QPushButton("Export objects")
        self.model_picker = ModelPicker(self.session, None)
        self.model_path = PathEdit(folder=True)
        self.model_button = QPushButton("Save model folder")
        self.package_path = PathEdit(folder=False, package=True)
        self.package_path.edit.setPlaceholderText("a new .zip file")
        self.package_button = QPushButton("Export as bioimage.io package (.zip)")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self._done_text = "Saved."
        self.buttons = (
            self.mask_button,
            self.image_button,
            self.metrics_button,
            self.objects_button,
            self.model_button,
            self.package_button,
        )

        layout = QVBoxLayout(self)
        layout.addWidget(
            _group(
                "Mask or labels",
                [
                    ("Layer", self.mask_combo),
                    ("Format", self.format_combo),
                    ("Save as", self.mask_path),
                ],
                self.mask_button,
            )
        )
        layout.addWidget(
            _group(
                "Probabilities / uncertainty",
                [("Layer", self.image_combo), ("Save as", self.image_path)],
                self.image_button,
            )
        )
        layout.addWidget(
            _group(
                "IoU / Dice table of the mask above",
                [("Save as", self.metrics_path)],
                self.metrics_button,
            )
        )
        layout.addWidget(
            _group(
                "Objects: cells.tif / <class>.tif and objects.csv",
                [("Objects of", self.objects_combo), ("Folder", self.objects_path)],
                self.objects_button,
            )
        )
        layout.addWidget(
            _group(
                "Model",
                [
                    ("Model", self.model_picker),
                    ("Folder", self.model_path),
                    ("", self.model_button),
                    ("Package", self.package_path),
                ],
                self.package_button,
            )
        )
        layout.addWidget(self.status_label)
        layout.addStretch()
        self.mask_button.clicked.connect(self.export_mask)
        self.image_button.clicked.connect(self.export_image)
        self.metrics_button.clicked.connect(self.export_metrics)
        self.objects_button.clicked.connect(self.export_objects)
        self.model_button.clicked.connect(self.export_model)
        self.package_button.clicked.connect(self.export_package)

    def export_mask(self) -> Job | None:
        """Write the chosen Labels layer through the project's writer."""
        layer = self.mask_combo.layer()
        path = self._path(self.mask_path, layer)
        if layer is None or path is None:
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        meta = {"metadata": dict(layer.metadata)}
        as_pngs = self.format_combo.currentText() == PNGS
        # A copy: the user may keep painting on the layer while the file is written.
        return self._start(export_mask, path, as_pngs, np.array(data, copy=True), meta)

    def export_image(self) -> Job | None:
        """Write the chosen Image layer (e.g. a probability map) as a float32 TIFF."""
        layer = self.image_combo.layer()
        path = self._path(self.image_path, layer)
        if layer is None or path is None:
            return None
        return self._start(export_image, path, image_data(layer))

    def export_metrics(self) -> Job | None:
        """Write the IoU / Dice table stored in the chosen mask layer as CSV."""
        layer = self.mask_combo.layer()
        path = self._path(self.metrics_path, layer)
        if layer is None or path is None:
            return None
        rows = layer.metadata.get("metrics_rows")
        if not rows:
            show_error(f"{layer.name} has no metrics yet: evaluate it in Predict & inspect first.")
            return None
        return self._start(export_metrics, path, list(rows))

    def export_objects(self) -> Job | None:
        """Write every objects layer of the chosen layer's image, as the command line does."""
        layer = self.objects_combo.layer()
        folder = self._path(self.objects_path, layer)
        if layer is None or folder is None:
            return None
        labels: dict[str, Any] = {}
        tables: dict[str, dict[str, np.ndarray]] = {}
        try:
            for each in same_image_objects(self.viewer, layer):
                kind = kind_name(each)
                if kind in labels:
                    raise DlbioError(f"two of its layers hold {kind}; remove one.")
                tables[kind] = objects_table(each.features)
                # Not copied: the job reads the labels slice by slice as it writes them.
                labels[kind] = each.data[0] if each.multiscale else each.data
        except DlbioError as error:
            show_error(f"Cannot export the objects of {layer.name}: {error}")
            return None
        slice_index = layer.metadata.get("slice")
        return self._start(export_objects, folder, labels, tables, slice_index)

    def export_model(self) -> Job | None:
        """Save the chosen model of the session as a new model folder."""
        model = self.model_picker.model()
        if model is None:
            show_error("There is no model to save yet: train one first.")
            return None
        path = self._path(self.model_path, model)
        if path is None:
            return None
        return self._start(
            export_model,
            self.session.engine,
            path,
            model,
            on_result=lambda written: self.session.saved(model, Path(written[0])),
        )

    def export_package(self) -> Job | None:
        """Write the chosen model of the session as a bioimage.io model package (.zip)."""
        model = self.model_picker.model()
        if model is None:
            show_error("There is no model to export yet: train or load one first.")
            return None
        path = self._path(self.package_path, model)
        if path is None:
            return None
        shown = f'"{path}"' if " " in str(path) else str(path)
        done = f"Saved {path}. Check it with bioimage.io's own test: bioimageio test {shown}"
        return self._start(export_package, self.session.engine, path, model, done=done)

    def _path(self, edit: PathEdit, subject: object | None) -> Path | None:
        if subject is None:
            show_error("Choose what to export first.")
            return None
        if not edit.text():
            show_error("Choose where to save it (type a path or press '...').")
            return None
        return Path(edit.text()).expanduser()

    def _start(
        self,
        function: JobFunction,
        *args: Any,
        done: str = "Saved.",
        on_result: Callable[[Any], None] | None = None,
    ) -> Job:
        self._done_text = done
        self.job = Job(
            function, *args, description="Exporting", on_result=on_result, on_done=self._on_done
        )
        for button in self.buttons:
            button.setEnabled(False)
        self.status_label.setText("Writing...")
        return self.job.start()

    def _on_done(self, state: RunState) -> None:
        for button in self.buttons:
            button.setEnabled(True)
        texts = {
            RunState.DONE: self._done_text,
            RunState.FAILED: "Not saved; see the notification.",
        }
        self.status_label.setText(texts.get(state, state.value))


def same_image_objects(viewer: Any, chosen: Labels) -> list[Labels]:
    """The objects layers of the same image and slice(s) as ``chosen``, in the viewer's order.

    A Labels layer that Predict & inspect did not make as objects comes alone.
    """
    meta = chosen.metadata
    if meta.get(ROLE_KEY) != OBJECTS or meta.get("source") is None:
        return [chosen]
    return [
        layer
        for layer in viewer.layers
        if isinstance(layer, Labels)
        and layer.metadata.get(ROLE_KEY) == OBJECTS
        and layer.metadata.get("source") == meta["source"]
        and layer.metadata.get("slice") == meta.get("slice")
    ]


def kind_name(layer: Labels) -> str:
    """The kind of object a layer holds (``cells`` or a class): as its metadata says, else
    as its table's ``class`` column says, else its name after the image's."""
    kind = layer.metadata.get(OBJECT_KIND_KEY)
    if isinstance(kind, str) and kind:
        return kind
    features = layer.features
    classes = set(features["class"].astype(str)) if "class" in features else set()
    if len(classes) == 1:
        return classes.pop()
    source = str(layer.metadata.get("source", ""))
    if source and layer.name.startswith(f"{source} "):
        return layer.name.removeprefix(f"{source} ")
    return layer.name


def _group(title: str, rows: list[tuple[str, QWidget]], button: QPushButton) -> QGroupBox:
    box = QGroupBox(title)
    form = QFormLayout(box)
    for label, widget in rows:
        if label:
            form.addRow(label, widget)
        else:
            form.addRow(widget)
    form.addRow(button)
    return box
