"""Which slices Predict & inspect works on, and where a lazy volume's whole-stack result goes.

Part of the Predict & inspect widget, as magicgui widgets: the scope (the current slice, a
range of slices, the whole stack) and, for an image read lazily from disk (a dask array, an
OME-Zarr pyramid), the zarr stores its whole-stack prediction is written to slice by slice:
such a volume may not fit in memory, nor may its mask.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, SpinBox
from napari.layers import Image, Layer

from napari_dlbio._widgets._common import current_index, image_data, is_lazy, spatial_shape
from napari_dlbio._widgets._volume_jobs import VolumeOutput
from napari_dlbio.core.errors import DlbioError

_IMAGE_SUFFIX = re.compile(r"(\.ome)?\.(zarr|tiff?)$", re.IGNORECASE)


class Scope(Enum):
    """What a prediction covers."""

    CURRENT_SLICE = "current slice / image"
    SLICE_RANGE = "slice range"
    WHOLE_STACK = "whole stack"


def default_mask_store(layer: Layer) -> Path | None:
    """``<name>-mask.zarr`` next to the file the layer was read from; None without one."""
    source = layer.source.path
    if not source:
        return None
    path = Path(source)
    return path.parent / f"{_IMAGE_SUFFIX.sub('', path.name)}-mask.zarr"


def store_units(layer: Layer) -> tuple[str, ...] | None:
    """The units of a stack layer's Z, Y and X axes by name ("nanometer"); None in pixels."""
    units = tuple(str(unit) for unit in getattr(layer, "units", ())[-3:])  # napari >= 0.6
    return None if len(units) < 3 or "pixel" in units else units


def probabilities_store(mask: Path) -> Path:
    """The probabilities' store beside a mask store: ``x-mask.zarr`` -> ``x-probabilities.zarr``."""
    stem = mask.name.removesuffix(".zarr").removesuffix("-mask")
    return mask.with_name(f"{stem}-probabilities.zarr")


class ScopeForm(Container):
    """The scope of a prediction; for a lazy stack's whole stack, its output stores.

    Parameters
    ----------
    viewer
        The napari viewer: a new range starts at the slice it shows.
    image
        Gives the image layer chosen to predict on (None when there is none).
    """

    def __init__(self, viewer: Any, image: Callable[[], Image | None]) -> None:
        self.scope = ComboBox(label="Predict on", choices=[scope.value for scope in Scope])
        self.first = SpinBox(label="from slice", min=0, max=0)
        self.last = SpinBox(label="to slice", min=0, max=0)
        self.output = FileEdit(label="Mask store", mode="w", filter="*.zarr", nullable=True)
        self.output.tooltip = (
            "A lazy (on-disk) stack is predicted slice by slice into this zarr store; the "
            "probabilities go beside it as <name>-probabilities.zarr."
        )
        self.keep_probabilities = CheckBox(value=True, text="also write the probabilities")
        widgets = [self.scope, self.first, self.last, self.output, self.keep_probabilities]
        super().__init__(widgets=widgets, labels=True)
        self.margins = (0, 0, 0, 0)
        self._viewer = viewer
        self._image = image
        self._lazy_stack = False
        self._default: Path | None = None
        self.scope.changed.connect(self._scope_changed)
        self._show_fields()

    def refresh(self) -> None:
        """Bound the range by the image's slices and propose its output store."""
        layer = self._image()
        shape = spatial_shape(layer) if layer is not None else ()
        top = shape[0] - 1 if len(shape) == 3 else 0
        for box in (self.first, self.last):
            box.max = top
        self._lazy_stack = layer is not None and len(shape) == 3 and is_lazy(layer)
        default = default_mask_store(layer) if self._lazy_stack else None
        # A store the user chose stays; the one proposed for the previous image does not.
        if self.output.value is None or self.output.value == self._default:
            self.output.value = default
        self._default = self.output.value if default is not None else None
        self._show_fields()

    @property
    def chosen(self) -> Scope:
        """The scope chosen."""
        return Scope(self.scope.value)

    def selection(self, image: Image) -> tuple[Any, slice | None]:
        """The chosen slices of ``image`` as a (Z, ...) stack, not read yet, and which
        slices of the stack they are (None: all, or a 2D image as a stack of one)."""
        data = image_data(image)
        if len(spatial_shape(image)) < 3:
            return data[np.newaxis], None
        if self.chosen is Scope.CURRENT_SLICE:
            index = current_index(self._viewer, image)
            chosen = slice(index, index + 1)
        elif self.chosen is Scope.SLICE_RANGE:
            low, high = sorted((int(self.first.value), int(self.last.value)))
            chosen = slice(low, high + 1)
        else:
            return data, None
        return data[chosen], chosen

    def writes_to_disk(self) -> bool:
        """Whether the prediction goes to zarr stores: the whole stack of a lazy stack."""
        return self._lazy_stack and self.chosen is Scope.WHOLE_STACK

    def volume_output(self, image: Image) -> VolumeOutput:
        """The stores to write the prediction of ``image`` to.

        Raises
        ------
        DlbioError
            When none is chosen, or one exists already (it is never overwritten).
        """
        mask = self.output.value
        if mask is None:
            raise DlbioError("choose the mask store (a new .zarr folder) to write the volume to.")
        if mask.suffix.lower() != ".zarr":
            mask = mask.with_name(f"{mask.name}.zarr")
        keep = bool(self.keep_probabilities.value)
        output = VolumeOutput(mask, probabilities_store(mask) if keep else None, store_units(image))
        for path in output.paths():
            if path.exists():
                raise DlbioError(
                    f"{path} already exists and is not overwritten; choose another mask "
                    "store, or move that one away first."
                )
        return output

    def _scope_changed(self, *_: Any) -> None:
        image = self._image()
        if self.chosen is Scope.SLICE_RANGE and image is not None:
            self.first.value = self.last.value = current_index(self._viewer, image)
        self._show_fields()

    def _show_fields(self) -> None:
        ranged = self.chosen is Scope.SLICE_RANGE
        self.first.visible = self.last.visible = ranged
        self.output.visible = self.keep_probabilities.visible = self.writes_to_disk()
