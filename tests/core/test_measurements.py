from __future__ import annotations

import csv
import io
import math
import warnings

import numpy as np
import pytest
from skimage.measure import perimeter

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.measurements import (
    FEATURE_COLUMNS,
    csv_text,
    measure_objects,
    write_csv,
)


def _rectangle() -> np.ndarray:
    labels = np.zeros((20, 30), np.uint32)
    labels[5:15, 4:24] = 7  # 10 x 20 px
    return labels


def test_a_rectangle_is_measured_in_pixels() -> None:
    labels = _rectangle()
    image = np.where(labels > 0, 100.0, 3.0)
    table = measure_objects(labels, image, "cell")

    assert tuple(table) == FEATURE_COLUMNS
    assert table["label"].tolist() == [7]
    assert table["class"].tolist() == ["cell"]
    assert table["slice"].tolist() == [0]
    assert table["area_pixels"].tolist() == [200]
    assert table["area"][0] == 200.0
    assert table["perimeter"][0] == pytest.approx(perimeter(labels > 0))
    assert table["equivalent_diameter"][0] == pytest.approx(math.sqrt(4 * 200 / math.pi))
    assert table["eccentricity"][0] == pytest.approx(math.sqrt(1 - (10**2 - 1) / (20**2 - 1)))
    assert table["solidity"][0] == 1.0
    assert table["mean_intensity"][0] == 100.0


def test_square_pixels_scale_lengths_and_areas() -> None:
    table = measure_objects(_rectangle(), np.zeros((20, 30)), "cell", scale=(0.5, 0.5))

    assert table["area_pixels"][0] == 200
    assert table["area"][0] == pytest.approx(50.0)
    assert table["perimeter"][0] == pytest.approx(0.5 * perimeter(_rectangle() > 0))
    assert table["equivalent_diameter"][0] == pytest.approx(math.sqrt(4 * 50 / math.pi))


def test_oblong_pixels_measure_the_physical_shape_and_leave_the_perimeter_out() -> None:
    # 10 x 20 px of 1 x 0.5 um: a 10 um square.
    table = measure_objects(_rectangle(), np.zeros((20, 30)), "cell", scale=(1.0, 0.5))

    assert table["area"][0] == pytest.approx(100.0)
    assert table["eccentricity"][0] == pytest.approx(0.0, abs=0.1)
    assert np.isnan(table["perimeter"][0])
    assert table["solidity"][0] == 1.0


def test_colour_images_give_the_mean_over_channels() -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 60
    table = measure_objects(_rectangle(), image, "leaf spot")
    assert table["mean_intensity"][0] == pytest.approx(30.0)


def test_per_slice_rows_follow_the_stack_and_its_first_slice() -> None:
    labels = np.zeros((3, 20, 30), np.uint32)
    labels[0] = _rectangle()
    labels[2, 0:4, 0:4] = 1
    labels[2, 10:13, 10:13] = 2
    table = measure_objects(labels, np.zeros(labels.shape), "mito", first_slice=10)

    assert table["label"].tolist() == [7, 1, 2]
    assert table["slice"].tolist() == [10, 12, 12]
    assert table["area_pixels"].tolist() == [200, 16, 9]


def test_objects_through_the_stack_are_measured_as_volumes() -> None:
    labels = np.zeros((4, 20, 30), np.uint32)
    labels[1:4, 5:15, 4:24] = 3  # 3 slices of 10 x 20
    labels[2, 0:2, 0:5] = 4  # flat: one slice only
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no convex-hull failure for the flat object
        table = measure_objects(
            labels, np.ones(labels.shape), "cell", scale=(50, 4, 4), volumetric=True
        )

    assert table["label"].tolist() == [3, 4]
    assert table["slice"].tolist() == [1, 2]
    assert table["area_pixels"].tolist() == [600, 10]
    volume = 600 * 50 * 4 * 4
    assert table["area"][0] == pytest.approx(volume)
    assert table["equivalent_diameter"][0] == pytest.approx((6 * volume / math.pi) ** (1 / 3))
    assert np.isnan(table["perimeter"]).all()
    assert np.isnan(table["eccentricity"]).all()
    assert table["solidity"].tolist() == pytest.approx([1.0, 1.0])


def test_no_objects_give_empty_columns_of_the_right_types() -> None:
    table = measure_objects(np.zeros((2, 8, 8), np.uint32), np.zeros((2, 8, 8, 3)), "cell")

    assert tuple(table) == FEATURE_COLUMNS
    assert all(column.shape == (0,) for column in table.values())
    assert table["label"].dtype == np.int64
    assert table["area_pixels"].dtype == np.int64
    assert table["class"].dtype.kind == "U"
    assert table["area"].dtype == np.float64


@pytest.mark.parametrize(
    ("labels", "image", "kwargs", "message"),
    [
        (np.zeros((8, 8), np.uint32), np.zeros((8, 9)), {}, "need an image of that shape"),
        (np.zeros(8, np.uint32), np.zeros(8), {}, r"\(Y, X\) or \(Z, Y, X\)"),
        (np.zeros((8, 8), np.uint32), np.zeros((8, 8)), {"volumetric": True}, "through the"),
        (np.zeros((8, 8), np.uint32), np.zeros((8, 8)), {"scale": (0, 1)}, "pixel size"),
    ],
)
def test_inputs_that_do_not_fit_are_refused(labels, image, kwargs, message) -> None:
    with pytest.raises(InputDataError, match=message):
        measure_objects(labels, image, "cell", **kwargs)


def test_csv_written_slice_by_slice_has_one_header_and_reads_back() -> None:
    labels = np.zeros((2, 20, 30), np.uint32)
    labels[0] = _rectangle()
    labels[1, 0:3, 0:3] = 8
    buffer = io.StringIO()
    for z in range(2):
        part = measure_objects(labels[z], np.zeros((20, 30)), "cell, large", first_slice=z)
        write_csv(part, buffer, header=z == 0)

    rows = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert rows[0] == list(FEATURE_COLUMNS)
    assert len(rows) == 3
    assert rows[1][:4] == ["7", "cell, large", "0", "200"]
    assert rows[2][:4] == ["8", "cell, large", "1", "9"]
    assert float(rows[1][4]) == 200.0


def test_csv_leaves_nan_empty() -> None:
    text = csv_text({"label": np.array([1]), "perimeter": np.array([np.nan])})
    assert text == "label,perimeter\n1,\n"


def test_csv_refuses_columns_of_different_lengths() -> None:
    with pytest.raises(InputDataError, match="label 2, area 1"):
        csv_text({"label": np.array([1, 2]), "area": np.array([3.0])})
