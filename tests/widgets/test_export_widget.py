"""Export: files appear where asked, nothing existing is overwritten, and the widget recovers."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_dlbio._widgets.export_widget import PNGS, ExportWidget
from napari_dlbio.core.events import RunState

pytestmark = pytest.mark.gui


def test_mask_export_as_tiff_and_pngs(viewer, finish, tmp_path) -> None:
    mask = viewer.add_labels(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) % 3)
    mask.metadata["class_names"] = ["background", "membrane", "mitochondria"]
    widget = ExportWidget(viewer)
    widget.mask_combo.select(mask)
    widget.mask_path.setText(str(tmp_path / "mask.tif"))
    widget.mask_button.click()
    finish(widget)
    assert widget.job.state is RunState.DONE
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "mask.tif"), mask.data)

    widget.format_combo.setCurrentText(PNGS)
    widget.mask_path.setText(str(tmp_path / "slices"))
    widget.mask_button.click()
    finish(widget)
    assert sorted(p.name for p in (tmp_path / "slices").iterdir()) == [
        "slices_0000.png",
        "slices_0001.png",
    ]


def test_an_existing_file_is_never_overwritten(viewer, finish, tmp_path, shown_errors) -> None:
    target = tmp_path / "probability.tif"
    target.write_bytes(b"precious")
    image = viewer.add_image(np.random.default_rng(0).random((2, 4, 4), dtype=np.float32))
    widget = ExportWidget(viewer)
    widget.image_combo.select(image)
    widget.image_path.setText(str(target))
    widget.image_button.click()
    finish(widget)
    assert widget.job.state is RunState.FAILED
    assert target.read_bytes() == b"precious"
    assert any("does not overwrite" in text for text in shown_errors())
    assert all(button.isEnabled() for button in widget.buttons)

    widget.image_path.setText(str(tmp_path / "new.tif"))
    widget.image_button.click()
    finish(widget)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "new.tif"), image.data)


def test_metrics_and_model_need_something_to_export(viewer, tmp_path, shown_errors) -> None:
    mask = viewer.add_labels(np.zeros((2, 4, 4), np.uint8), name="unscored")
    widget = ExportWidget(viewer)
    widget.mask_combo.select(mask)
    widget.metrics_path.setText(str(tmp_path / "metrics.csv"))
    widget.metrics_button.click()
    widget.model_path.setText(str(tmp_path / "model"))
    widget.model_button.click()
    assert widget.job is None
    assert not (tmp_path / "metrics.csv").exists()
    texts = shown_errors()
    assert any("no metrics yet" in text for text in texts)
    assert any("no model to save" in text for text in texts)
