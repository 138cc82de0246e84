"""Predict & inspect on lazy layers: only the chosen slices are read, a whole volume goes to
zarr stores on disk (and comes back lazily), Cancel and an existing store leave no trace."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest

from napari_dlbio._sample_data import make_isbi_sample
from napari_dlbio._widgets._volume_jobs import STORE_KEY, VOLUME_NOTE
from napari_dlbio._widgets._volume_output import Scope
from napari_dlbio._widgets.predict_widget import PredictWidget
from napari_dlbio.core.events import RunState
from napari_dlbio.core.zarr_output import open_zarr_output

pytestmark = pytest.mark.gui

SLICES, SIDE = 4, 256
SCALE = (3.0, 1.0, 1.0)
#: Only ends a test that hangs (see conftest.HANG_GUARD_MS); no test waits this long.
HOLD_GUARD_S = 300


class RecordedStack:
    """A (Z, Y, X) array-like that records the slices read from it, and can hold a read.

    Parameters
    ----------
    data
        The pixels.
    """

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.read: set[int] = set()
        self.hold_at: int | None = None
        self.reached, self.released = threading.Event(), threading.Event()

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = key[0] if isinstance(key, tuple) else key
        picked = range(self.shape[0])[rows]
        slices = set(picked) if isinstance(picked, range) else {picked}
        self.read |= slices
        if self.hold_at in slices:
            self.reached.set()
            self.released.wait(HOLD_GUARD_S)
        return self.data[key]


def _lazy(stack: RecordedStack) -> da.Array:
    """A dask array over ``stack``, one chunk per slice (nothing read yet)."""
    meta = np.empty((0,) * stack.ndim, dtype=stack.dtype)
    chunks = (1, *stack.shape[1:])
    return da.from_array(stack, chunks=chunks, meta=meta, name=f"recorded-{id(stack)}")


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """The first ISBI sections, cropped: small enough to predict in moments on a CPU."""
    (image, _, _), _ = make_isbi_sample()
    return np.ascontiguousarray(image[:SLICES, :SIDE, :SIDE])


def _widget(viewer: Any, layer: Any) -> PredictWidget:
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.select(layer)
    assert widget.model_combo.currentText() == "built-in em-membranes"
    return widget


def _shown(widget: Any) -> bool:
    """Whether a form field is shown (once its dock is: test viewers stay hidden)."""
    return not widget.native.isHidden()


def _add_recorded(viewer: Any, crop: np.ndarray, multiscale: bool) -> tuple[Any, RecordedStack]:
    full = RecordedStack(crop)
    data: Any = _lazy(full)
    if multiscale:
        data = [data, _lazy(RecordedStack(crop[:, ::2, ::2]))]
    layer = viewer.add_image(
        data, name="lazy EM", scale=SCALE, contrast_limits=(0, 255), multiscale=multiscale
    )
    return layer, full


@pytest.mark.parametrize("multiscale", [False, True], ids=["dask", "multiscale"])
def test_a_slice_and_a_range_read_only_their_slices(
    viewer, crop, finish, shown_errors, multiscale
) -> None:
    layer, full = _add_recorded(viewer, crop, multiscale)
    widget = _widget(viewer, layer)
    viewer.dims.set_point(0, 1 * SCALE[0])
    widget.scope_combo.setCurrentText(Scope.CURRENT_SLICE.value)
    full.read.clear()
    widget.predict_button.click()
    finish(widget)
    assert shown_errors() == []
    mask = viewer.layers["lazy EM mask"]
    assert mask.data.shape == (1, SIDE, SIDE)
    assert mask.translate[0] == pytest.approx(1 * SCALE[0])
    assert full.read == {1}

    # A range starts on the viewer's slice and ends at the stack's last slice at most.
    viewer.dims.set_point(0, 2 * SCALE[0])
    widget.scope_combo.setCurrentText(Scope.SLICE_RANGE.value)
    form = widget.scope_form
    assert (form.first.value, form.last.value) == (2, 2)
    assert form.first.max == form.last.max == SLICES - 1
    assert not _shown(form.output)
    form.first.value, form.last.value = 1, 2
    full.read.clear()
    widget.predict_button.click()
    finish(widget)
    assert shown_errors() == []
    mask = viewer.layers["lazy EM mask"]
    assert mask.data.shape == (2, SIDE, SIDE)
    assert mask.metadata["slice"] == 1
    assert mask.translate[0] == pytest.approx(1 * SCALE[0])
    assert isinstance(mask.data, np.ndarray)
    assert full.read == {1, 2}


def _write_store(path: Path, crop: np.ndarray) -> None:
    with open_zarr_output(path, shape=crop.shape, dtype=crop.dtype, scale=SCALE) as store:
        for z, plane in enumerate(crop):
            store.write(z, plane)


def test_b_the_whole_lazy_volume_goes_to_zarr_and_comes_back_lazily(
    viewer, crop, tmp_path, finish, shown_errors
) -> None:
    source = tmp_path / "em.ome.zarr"
    _write_store(source, crop)
    (lazy,) = viewer.open(str(source), plugin="napari-dlbio")
    widget = _widget(viewer, lazy)
    widget.scope_combo.setCurrentText(Scope.WHOLE_STACK.value)
    form = widget.scope_form
    assert _shown(form.output)
    assert form.output.value == tmp_path / "em-mask.zarr"
    widget.predict_button.click()
    finish(widget)
    assert shown_errors() == []
    assert widget.job.state is RunState.DONE
    assert VOLUME_NOTE in widget.status_label.text()

    mask = viewer.layers["em mask"]
    membrane = viewer.layers["em P(membrane)"]
    assert isinstance(mask.data, da.Array)
    assert isinstance(membrane.data, da.Array)
    assert mask.metadata[STORE_KEY] == str(tmp_path / "em-mask.zarr")
    assert membrane.metadata[STORE_KEY] == str(tmp_path / "em-probabilities.zarr")
    assert list(mask.features["class"]) == ["background", "membrane"]
    # No uncertainty map: the widgets that use one read it whole.
    assert "em uncertainty" not in viewer.layers
    np.testing.assert_allclose(mask.scale, lazy.scale)
    np.testing.assert_allclose(mask.translate, lazy.translate)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "em-mask.zarr",
        "em-probabilities.zarr",
        "em.ome.zarr",
    ]

    # The same slices predicted in memory, as before this issue: the same mask.
    in_memory = viewer.add_image(crop.copy(), name="EM in memory", scale=SCALE)
    widget.image_combo.select(in_memory)
    assert not _shown(form.output)
    widget.predict_button.click()
    finish(widget)
    expected = viewer.layers["EM in memory mask"]
    assert isinstance(expected.data, np.ndarray)
    np.testing.assert_array_equal(np.asarray(mask.data), expected.data)
    np.testing.assert_allclose(
        np.asarray(membrane.data), viewer.layers["EM in memory P(membrane)"].data, atol=1e-5
    )

    # The mask store opens on its own as Labels with its class names.
    (reopened,) = viewer.open(str(tmp_path / "em-mask.zarr"), plugin="napari-dlbio")
    assert reopened.metadata["class_names"] == ["background", "membrane"]
    np.testing.assert_array_equal(np.asarray(reopened.data), expected.data)


def test_c_cancel_mid_volume_leaves_no_store_and_the_layers_as_they_were(
    viewer, crop, tmp_path, finish, wait_until: Callable[[Callable[[], Any]], None]
) -> None:
    layer, full = _add_recorded(viewer, crop, multiscale=False)
    widget = _widget(viewer, layer)
    viewer.dims.set_point(0, 0)
    widget.scope_combo.setCurrentText(Scope.WHOLE_STACK.value)
    widget.scope_form.output.value = tmp_path / "cancelled-mask.zarr"
    names = [each.name for each in viewer.layers]
    full.hold_at = SLICES - 1
    widget.predict_button.click()
    wait_until(full.reached.is_set)
    # Mid-run: the stores are being written, under hidden names.
    assert any(path.name.endswith(".partial") for path in tmp_path.iterdir())
    widget.cancel_button.click()
    full.released.set()
    finish(widget)
    assert widget.job.state is RunState.CANCELLED
    assert list(tmp_path.iterdir()) == []
    assert [each.name for each in viewer.layers] == names
    assert viewer.layers["lazy EM"] is layer
    assert "Cancelled" in widget.status_label.text()
    assert widget.predict_button.isEnabled()


@pytest.mark.parametrize("taken", ["old-mask.zarr", "old-probabilities.zarr"])
def test_d_an_existing_store_is_refused_and_left_intact(
    viewer, crop, tmp_path, shown_errors, taken
) -> None:
    layer, _ = _add_recorded(viewer, crop, multiscale=False)
    widget = _widget(viewer, layer)
    widget.scope_combo.setCurrentText(Scope.WHOLE_STACK.value)
    widget.scope_form.output.value = tmp_path / "old-mask.zarr"
    existing = tmp_path / taken
    existing.mkdir()
    (existing / "keep.txt").write_text("my earlier result")
    widget.predict_button.click()
    (error,) = shown_errors()
    assert str(existing) in error
    assert "already exists" in error
    assert widget.job is None
    assert (existing / "keep.txt").read_text() == "my earlier result"
    assert widget.predict_button.isEnabled()


def test_e_a_range_of_an_image_in_memory_is_scored_and_cut_into_objects(
    viewer, isbi, finish, shown_errors
) -> None:
    image, annotation = isbi
    image.scale = annotation.scale = SCALE
    widget = _widget(viewer, image)
    widget.metrics.reference_combo.select(annotation)
    viewer.dims.set_point(0, 1 * SCALE[0])
    widget.scope_combo.setCurrentText(Scope.SLICE_RANGE.value)
    widget.scope_form.last.value = 2
    widget.predict_button.click()
    finish(widget)
    assert shown_errors() == []

    mask, cells = viewer.layers["ISBI 2012 EM mask"], viewer.layers["ISBI 2012 EM cells"]
    for layer in (mask, cells):
        assert layer.data.shape == (2, 512, 512)
        assert layer.metadata["slice"] == 1
        assert layer.translate[0] == pytest.approx(1 * SCALE[0])
    assert set(cells.features["slice"]) == {1, 2}
    rows = mask.metadata["metrics_rows"]
    assert {row["slice"] for row in rows if row["scope"] == "slice"} == {1, 2}
    truth = annotation.data[1:3] == 2
    predicted = mask.data == 1
    expected = (predicted & truth).sum() / (predicted | truth).sum()
    assert mask.features["iou"][1] == pytest.approx(expected, rel=1e-6)
    assert viewer.layers["ISBI 2012 EM uncertainty"].data.shape == (2, 512, 512)

    # Evaluate again from the metrics panel: the range's reference slices, not one.
    scored_by_prediction = mask.metadata["metrics"]
    widget.metrics.prediction_combo.select(mask)
    widget.metrics.evaluate_button.click()
    finish(widget.metrics)
    assert shown_errors() == []
    assert mask.metadata["metrics"] == scored_by_prediction


def test_f_the_mask_alone_when_the_probabilities_are_not_kept(
    viewer, crop, tmp_path, finish, shown_errors
) -> None:
    layer, full = _add_recorded(viewer, crop, multiscale=True)
    widget = _widget(viewer, layer)
    widget.scope_combo.setCurrentText(Scope.WHOLE_STACK.value)
    widget.scope_form.output.value = tmp_path / "only"
    widget.scope_form.keep_probabilities.value = False
    widget.predict_button.click()
    finish(widget)
    assert shown_errors() == []
    assert [path.name for path in tmp_path.iterdir()] == ["only.zarr"]
    mask = viewer.layers["lazy EM mask"]
    assert isinstance(mask.data, da.Array)
    assert mask.data.shape == (SLICES, SIDE, SIDE)
    assert full.read == set(range(SLICES))
    assert "lazy EM P(membrane)" not in viewer.layers


def test_training_on_a_lazy_stack_reads_only_the_painted_slices(viewer, crop) -> None:
    from napari_dlbio._widgets.train_widget import TrainWidget

    layer, full = _add_recorded(viewer, crop, multiscale=False)
    annotation = np.zeros(crop.shape, dtype=np.uint8)
    annotation[2, :40, :40], annotation[2, 100:140, 100:140] = 1, 2
    labels = viewer.add_labels(annotation, name="strokes", scale=SCALE)
    widget = TrainWidget(viewer)
    widget.image_combo.select(layer)
    widget.annotation_combo.select(labels)
    full.read.clear()  # what napari itself read to draw the layer

    request = widget._request()

    assert full.read == {2}
    np.testing.assert_array_equal(request.images, crop[2:3])
    np.testing.assert_array_equal(request.targets, annotation[2:3])
