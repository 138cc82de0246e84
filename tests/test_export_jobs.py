"""The Export widget's file jobs write what reads back the same (no viewer needed)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlbio._widgets._export_jobs import export_image
from napari_dlbio.core.events import CancelToken, run_to_end
from napari_dlbio.core.io import read_stack


@pytest.mark.parametrize("shape", [(3, 16, 16), (4, 16, 16), (5, 16, 16), (3, 16, 16, 3)])
def test_a_float_map_reads_back_with_its_slices(tmp_path, shape) -> None:
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    path = tmp_path / "uncertainty.tif"
    run_to_end(export_image(path, data, cancel=CancelToken()))
    # tifffile stores 3 or 4 (Y, X) slices as the colours of one page unless told not to.
    stack = read_stack(path)
    np.testing.assert_array_equal(stack.data, data)
