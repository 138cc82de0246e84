"""The pure adapters from results to layer data: alignment, colours, metrics tables."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from napari_dlbio._layers import (
    OBJECTS,
    ROLE_KEY,
    Placement,
    accuracy_text,
    annotation_colormap,
    annotation_layer,
    classification_rows,
    classification_text,
    gradcam_layer,
    mask_colormap,
    metrics_csv,
    metrics_features,
    metrics_rows,
    prediction_layers,
    slice_metrics_text,
)
from napari_dlbio._object_layers import object_score_rows, objects_layers
from napari_dlbio.core.metrics import segmentation_report
from napari_dlbio.core.uncertainty import entropy_map

NAMES = ["background", "membrane", "mitochondria"]
STACK = Placement(scale=(50.0, 4.0, 4.0), translate=(100.0, 8.0, 0.0))


def _prediction(z: int = 2, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(k), size=(z, 6, 5)).astype(np.float32)
    return probabilities.argmax(-1).astype(np.uint8), probabilities


def test_annotation_layer_matches_image_and_names_classes() -> None:
    data, meta, layer_type = annotation_layer((3, 8, 9), NAMES, STACK, "em annotation")
    assert layer_type == "labels"
    assert data.shape == (3, 8, 9)
    assert data.dtype == np.uint8
    assert not data.any()
    assert meta["scale"] == STACK.scale
    assert meta["translate"] == STACK.translate
    assert meta["features"]["class"] == ["not annotated", *NAMES]
    assert meta["metadata"]["class_names"] == NAMES


def test_a_class_keeps_its_colour_from_annotation_to_mask() -> None:
    annotation, mask = annotation_colormap(3), mask_colormap(3)
    assert annotation[0] == mask[0] == "transparent"
    assert annotation[2] == mask[1]
    assert annotation[3] == mask[2]
    assert len({annotation[1], annotation[2], annotation[3]}) == 3


def test_whole_stack_prediction_is_aligned_and_complete() -> None:
    mask, probabilities = _prediction()
    layers = prediction_layers(mask, probabilities, NAMES, STACK, "em")
    assert [layer_type for _, _, layer_type in layers] == ["labels", "image", "image", "image"]
    names = [meta["name"] for _, meta, _ in layers]
    assert names == ["em mask", "em P(membrane)", "em P(mitochondria)", "em uncertainty"]
    for data, meta, _ in layers:
        assert data.shape == mask.shape
        assert meta["scale"] == STACK.scale
        assert meta["translate"] == STACK.translate
    np.testing.assert_array_equal(layers[0][0], mask)
    np.testing.assert_allclose(layers[2][0], probabilities[..., 2])
    assert layers[0][1]["metadata"][ROLE_KEY] == "prediction"
    assert layers[0][1]["metadata"]["class_names"] == NAMES


def test_one_slice_prediction_sits_on_its_slice() -> None:
    mask, probabilities = _prediction(z=1)
    layers = prediction_layers(mask, probabilities, NAMES, STACK, "em", slice_index=4)
    for _, meta, _ in layers:
        assert meta["translate"] == (100.0 + 4 * 50.0, 8.0, 0.0)
        assert meta["metadata"]["slice"] == 4


def test_prediction_of_a_2d_image_stays_2d() -> None:
    mask, probabilities = _prediction(z=1)
    flat = Placement(scale=(2.0, 2.0), translate=(0.0, 0.0))
    layers = prediction_layers(mask, probabilities, NAMES, flat, "photo")
    assert layers[0][0].shape == mask.shape[1:]
    assert layers[0][1]["scale"] == (2.0, 2.0)


def test_entropy_is_zero_when_certain_and_one_when_uniform() -> None:
    certain = np.array([[1.0, 0.0, 0.0]], np.float32)
    uniform = np.full((1, 3), 1 / 3, np.float32)
    assert entropy_map(certain)[0] == pytest.approx(0.0, abs=1e-5)
    assert entropy_map(uniform)[0] == pytest.approx(1.0, abs=1e-5)


def test_gradcam_overlay_is_on_the_explained_image() -> None:
    heatmap = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    data, meta, layer_type = gradcam_layer(heatmap, Placement((1.0, 1.0, 1.0), (0.0,) * 3), "l", 7)
    assert layer_type == "image"
    assert data.shape == (1, 3, 4)
    assert meta["translate"] == (7.0, 0.0, 0.0)
    assert meta["colormap"] == "inferno"
    assert meta["blending"] == "additive"


def _report() -> dict:
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[:, :2] = 1
    predicted = truth.copy()
    predicted[1, 0, 0] = 0
    return segmentation_report(truth, predicted, ["background", "membrane"])


def test_metrics_rows_features_and_csv_agree() -> None:
    report = _report()
    rows = metrics_rows(report, slice_offset=10)
    overall = [row for row in rows if row["scope"] == "overall"]
    per_slice = [row for row in rows if row["scope"] == "slice"]
    assert [row["class"] for row in overall] == ["background", "membrane"]
    assert {row["slice"] for row in per_slice} == {10, 11}
    membrane_11 = next(r for r in per_slice if r["slice"] == 11 and r["class"] == "membrane")
    assert membrane_11["iou"] == pytest.approx(7 / 8)
    features = metrics_features(report)
    assert features["index"] == [0, 1]
    assert features["iou"][1] == pytest.approx(report["classes"]["membrane"]["iou"])
    table = list(csv.DictReader(io.StringIO(metrics_csv(rows))))
    assert len(table) == len(rows)
    assert float(table[1]["dice"]) == pytest.approx(overall[1]["dice"])


def test_slice_text_names_the_foreground_classes_of_that_slice() -> None:
    rows = metrics_rows(_report())
    text = slice_metrics_text(rows, 1)
    assert text.startswith("slice 1:")
    assert "membrane IoU 0.875" in text
    assert "background" not in text
    assert "no metrics" in slice_metrics_text(rows, 5)


def test_undefined_figures_are_nan_in_features() -> None:
    report = segmentation_report(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int), ["bg", "x"])
    assert math.isnan(metrics_features(report)["iou"][1])


def test_classification_rows_and_text() -> None:
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1]])
    rows = classification_rows(probabilities, ["healthy", "blight"], [1, 1, 0], first_index=1)
    assert [row["image"] for row in rows] == [1, 2]
    assert rows[0]["predicted"] == "blight"
    assert rows[0]["true"] == "blight"
    assert rows[1]["true"] == "healthy"
    assert classification_text(rows, 2) == "image 2: healthy p=0.90 (true: healthy)"
    assert "not predicted" in classification_text(rows, 0)


def test_accuracy_keeps_the_images_the_model_was_trained_on_apart() -> None:
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1], [0.3, 0.7]])
    truth = [1, 1, 1]
    rows = classification_rows(
        probabilities, ["healthy", "blight"], truth, seen_in_training=[True, True, False]
    )
    assert [row["trained on"] for row in rows] == ["yes", "yes", "no"]
    text = accuracy_text(rows)
    assert "1.00 on 1 image(s) not seen in training" in text
    assert "0.50 on 2 image(s) it was trained on" in text
    assert "no true classes" in accuracy_text(classification_rows(probabilities, ["a", "b"]))


def test_objects_layers_sit_like_the_mask_with_features_indexed_by_label() -> None:
    from napari_dlbio.core.measurements import measure_objects
    from napari_dlbio.core.object_finder import ObjectKind, concatenate_tables

    kinds = [ObjectKind(1, "membrane", "boundary"), ObjectKind(2, "mitochondria", "object")]
    cells = np.zeros((1, 6, 5), np.uint32)
    cells[0, :2, :2], cells[0, 4:, 3:] = 4, 7
    mitochondria = np.zeros_like(cells)
    mitochondria[0, 3, 1:4] = 1
    image = np.arange(30, dtype=float).reshape(1, 6, 5)
    table = concatenate_tables(
        [
            measure_objects(cells, image, "cells", STACK.scale, first_slice=4),
            measure_objects(mitochondria, image, "mitochondria", STACK.scale, first_slice=4),
        ]
    )
    labels = {"cells": cells, "mitochondria": mitochondria}
    layers = objects_layers(labels, table, kinds, STACK, "em", 4, unit="nm")
    assert [meta["name"] for _, meta, _ in layers] == ["em cells", "em mitochondria"]
    mask = prediction_layers(*_prediction(z=1), NAMES, STACK, "em", slice_index=4)[0]
    (data, meta, layer_type), _ = layers
    assert layer_type == "labels"
    assert data.dtype == np.uint32
    assert (meta["scale"], meta["translate"]) == (mask[1]["scale"], mask[1]["translate"])
    assert list(meta["features"]["index"]) == list(meta["features"]["label"]) == [4, 7]
    assert list(meta["features"]["slice"]) == [4, 4]
    assert list(meta["features"]["area"]) == [4 * 16.0, 4 * 16.0]
    assert meta["metadata"][ROLE_KEY] == OBJECTS
    assert meta["metadata"]["kind"] == "cells"
    assert meta["metadata"]["unit"] == "nm"


def test_object_score_rows_give_rand_scores_to_cells_only() -> None:
    matching = {"f1": 0.8, "precision": 1.0, "recall": 2 / 3, "n_true": 3, "n_predicted": 2}
    scores = {
        "cells": {"role": "boundary", "v_rand": 0.9, "v_info": 0.95, "cells": matching},
        "mitochondria": {"role": "object", **matching},
    }
    cells, mitochondria = object_score_rows(scores)
    assert (cells["objects"], cells["V_rand"], cells["F1@0.5"]) == ("cells", 0.9, 0.8)
    assert mitochondria["V_rand"] is None
    assert (mitochondria["true"], mitochondria["found"]) == (3, 2)
