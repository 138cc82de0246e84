"""The widgets' job helpers that need no Qt: settings for fine-tuning and scoring."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlbio._widgets._jobs import Reference, evaluate
from napari_dlbio.core.config import apply_changes
from napari_dlbio.core.errors import ConfigError, InputDataError
from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig


def test_apply_changes_reaches_into_nested_configs_and_validates() -> None:
    config = SegmentationConfig(network=UNetConfig(depth=4, base_filters=16))
    changed = apply_changes(config, {"epochs": 3, "network.depth": 2, "patch_size": 64})
    assert changed.epochs == 3
    assert changed.network.depth == 2
    assert changed.network.base_filters == 16
    assert config.epochs != 3
    with pytest.raises(ConfigError, match="multiple of 8"):
        apply_changes(config, {"network.depth": 2, "patch_size": 30})


def test_evaluate_counts_only_annotated_pixels_of_an_annotation() -> None:
    mask = np.array([[[1, 1], [0, 0]]], np.uint8)
    annotation = np.array([[[2, 0], [1, 2]]], np.uint8)  # one pixel left unannotated
    result = evaluate(mask, Reference(annotation, is_annotation=True), ["bg", "membrane"], 7)
    membrane = result.report["classes"]["membrane"]
    assert membrane["pixels"] == 2
    assert membrane["iou"] == pytest.approx(0.5)
    assert {row["slice"] for row in result.rows if row["scope"] == "slice"} == {7}
    assert result.features["class"] == ["bg", "membrane"]


def test_evaluate_reads_a_mask_as_given_and_rejects_other_shapes() -> None:
    mask = np.array([[[1, 0], [0, 0]]], np.uint8)
    truth = np.array([[1, 0], [0, 0]], np.uint8)  # a 2D reference of a one-slice mask
    result = evaluate(mask, Reference(truth, is_annotation=False), ["bg", "membrane"], 0)
    assert result.report["classes"]["membrane"]["iou"] == pytest.approx(1.0)
    with pytest.raises(InputDataError, match="shape"):
        evaluate(mask, Reference(np.zeros((2, 2, 2), np.uint8), False), ["bg", "membrane"], 0)
    with pytest.raises(InputDataError, match="Read as"):
        evaluate(mask, Reference(truth * 5, False), ["bg", "membrane"], 0)
