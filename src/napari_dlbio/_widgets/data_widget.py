"""Data & annotation: make an annotation layer for an image, or turn labels into one."""

from __future__ import annotations

from typing import Any

from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_dlbio._layers import ANNOTATION, ROLE_KEY, annotation_layer
from napari_dlbio._widgets._common import (
    annotation_class_names,
    class_stack_metadata,
    placement_of,
    spatial_shape,
)
from napari_dlbio._widgets._fields import LayerCombo
from napari_dlbio._widgets._result_layers import show_layers
from napari_dlbio.core.errors import DlbioError
from napari_dlbio.core.labels import annotation_from_dense, annotation_from_mask, parse_label_values

DEFAULT_CLASSES = "background, membrane"
MASK_READING = "mask: 0 = background, k = class k"
VALUES_READING = "values: mapping below"


class DataWidget(QWidget):
    """Pick the image, create its annotation layer, or convert labels into annotations.

    The annotation layer matches the image (shape without colour, scale, translate) and
    paints class k with label k + 1; label 0 means "not annotated" and is ignored by training.

    Parameters
    ----------
    napari_viewer
        The viewer the widget is docked in.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.kind_label = QLabel()
        self.kind_label.setWordWrap(True)
        self.classes_edit = QLineEdit(DEFAULT_CLASSES)
        self.classes_edit.setToolTip("Class names separated by commas, background first.")
        self.create_button = QPushButton("Create annotation layer")
        self.create_button.clicked.connect(self.create_annotation)

        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.reading_combo = QComboBox()
        self.reading_combo.addItems([MASK_READING, VALUES_READING])
        self.values_edit = QLineEdit("255=background, 0=membrane")
        self.values_edit.setToolTip(
            "value=class pairs, e.g. ISBI labels: 255=background,0=membrane"
        )
        self.convert_button = QPushButton("Use as annotation")
        self.convert_button.clicked.connect(self.convert_labels)

        annotate = QFormLayout()
        annotate.addRow("Image", self.image_combo)
        annotate.addRow(self.kind_label)
        annotate.addRow("Classes", self.classes_edit)
        annotate.addRow(self.create_button)
        annotate_box = QGroupBox("Annotate")
        annotate_box.setLayout(annotate)

        convert = QFormLayout()
        convert.addRow("Labels", self.labels_combo)
        convert.addRow("Read as", self.reading_combo)
        convert.addRow("Values", self.values_edit)
        convert.addRow(self.convert_button)
        convert_box = QGroupBox("Existing labels or ground truth")
        convert_box.setLayout(convert)

        layout = QVBoxLayout(self)
        layout.addWidget(annotate_box)
        layout.addWidget(convert_box)
        layout.addStretch()
        self.image_combo.currentIndexChanged.connect(self._describe_image)
        self.reading_combo.currentIndexChanged.connect(self._update_reading)
        self._describe_image()
        self._update_reading()

    def class_names(self) -> list[str]:
        """The class names typed in the form, background first."""
        return [name.strip() for name in self.classes_edit.text().split(",") if name.strip()]

    def create_annotation(self) -> Labels | None:
        """Add an empty annotation layer for the chosen image with the brush ready.

        If the image already has an annotation layer with these classes, that layer is
        chosen instead: a painted annotation is never replaced.
        """
        image = self.image_combo.layer()
        if image is None:
            show_error("Open an image first (File > Open, or File > Open Sample > napari-dlbio).")
            return None
        names = self.class_names()
        if len(names) < 2 or len(set(names)) != len(names):
            show_error(
                "Give at least two different class names, background first, separated by "
                'commas (e.g. "background, membrane, mitochondria").'
            )
            return None
        name = f"{image.name} annotation"
        existing = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        if _is_annotation_for(existing, spatial_shape(image), names):
            self._ready_brush(existing)
            show_info(f"{name} already exists: it is selected, with your strokes kept.")
            return existing
        data = annotation_layer(spatial_shape(image), names, placement_of(image), name)
        (layer,) = show_layers(self.viewer, [data])
        self._ready_brush(layer)
        show_info(
            f"Paint with label 1 for {names[0]} and labels 2..{len(names)} for "
            f"{', '.join(names[1:])}; unpainted pixels are ignored."
        )
        return layer

    def convert_labels(self) -> Labels | None:
        """Add an annotation layer converted from the chosen labels; the source stays as is."""
        source = self.labels_combo.layer()
        if source is None:
            show_error("Open a labels layer first (e.g. a ground-truth TIFF or a predicted mask).")
            return None
        reading = self.reading_combo.currentText()
        names = annotation_class_names(source) or self.class_names()
        data = source.data[0] if source.multiscale else source.data
        try:
            if reading == MASK_READING:
                annotation = annotation_from_mask(data)
            else:
                names = self.class_names()
                annotation = annotation_from_dense(
                    data, parse_label_values(self.values_edit.text()), names
                )
        except DlbioError as error:
            show_error(f"Cannot use {source.name} as annotation: {error}")
            return None
        if int(annotation.max()) > len(names):
            show_error(
                f"{source.name} has {int(annotation.max())} classes but only {len(names)} class "
                "names are given; type all class names (background first) in Classes."
            )
            return None
        _, meta, layer_type = annotation_layer(
            annotation.shape, names, placement_of(source), f"{source.name} annotation"
        )
        (layer,) = show_layers(self.viewer, [(annotation, meta, layer_type)])
        self._ready_brush(layer)
        return layer

    def _ready_brush(self, layer: Labels) -> None:
        self.viewer.layers.selection.active = layer
        layer.brush_size = 10
        layer.selected_label = 2
        layer.mode = "paint"

    def _describe_image(self, *_: Any) -> None:
        image = self.image_combo.layer()
        classes = class_stack_metadata(image)
        if image is None:
            self.kind_label.setText("No image yet: open one or a sample.")
        elif classes is not None:
            names, indices = classes
            self.kind_label.setText(
                f"Leaf stack: {len(indices)} images of {len(names)} classes (from their "
                "folders). Train a classifier directly; no painting needed."
            )
            self.classes_edit.setText(", ".join(names))
        else:
            self.kind_label.setText(f"Image {spatial_shape(image)}: paint a segmentation.")
        self.create_button.setEnabled(image is not None and classes is None)

    def _update_reading(self, *_: Any) -> None:
        self.values_edit.setEnabled(self.reading_combo.currentText() == VALUES_READING)


def _is_annotation_for(layer: Layer | None, shape: tuple[int, ...], names: list[str]) -> bool:
    """Whether ``layer`` is an annotation of an image of ``shape`` with these classes."""
    return (
        isinstance(layer, Labels)
        and layer.metadata.get(ROLE_KEY) == ANNOTATION
        and tuple(layer.data.shape) == shape
        and annotation_class_names(layer) == names
    )
