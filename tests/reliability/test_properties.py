"""Properties that must hold for any input: reader round trips, tiled prediction, metrics.

tests/core already checks that tiles cover an image and that the float64 stitcher rebuilds it,
and that IoU / Dice lie in [0, 1] and agree with each other.  Here: random arrays survive a
write and a read unchanged, the engine's own tiling (padding, tiles, blending, cropping)
puts every pixel back where it came from for any image, tile and network size, and the
metrics are symmetric, perfect for a perfect prediction and blind to unannotated pixels.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_dlbio.core import io
from napari_dlbio.core.metrics import (
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    pixel_accuracy,
    segmentation_report,
)

PIXEL_TYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64]
)
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@contextmanager
def _scratch() -> Iterator[Path]:
    """A fresh folder per example (pytest's tmp_path is shared by all of them)."""
    with tempfile.TemporaryDirectory(prefix="dlbio-property-") as folder:
        yield Path(folder)


@SETTINGS
@given(
    data=st.data(),
    dtype=PIXEL_TYPES,
    shape=st.tuples(st.integers(1, 5), st.integers(1, 40), st.integers(1, 40)),
    compression=st.sampled_from([None, "zlib"]),
)
def test_any_grey_stack_survives_a_tiff_round_trip(data, dtype, shape, compression):
    floats = np.dtype(dtype).kind == "f"
    stack = data.draw(hnp.arrays(dtype, shape, elements={"allow_nan": True} if floats else None))
    with _scratch() as folder:
        path = folder / "stack.tif"
        # Named axes: without them tifffile drops a trailing X of 1 from the pages.
        tifffile.imwrite(
            path, stack, photometric="minisblack", compression=compression, metadata={"axes": "ZYX"}
        )
        read = io.read_stack(path)

    assert read.axes == "ZYX"
    assert read.data.dtype == stack.dtype
    np.testing.assert_array_equal(read.data, stack)


@SETTINGS
@given(
    data=st.data(),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    slices=st.integers(1, 3),
    side=st.tuples(st.integers(1, 30), st.integers(1, 30)),
)
def test_any_rgb_stack_survives_a_tiff_round_trip(data, dtype, slices, side):
    stack = data.draw(hnp.arrays(dtype, (slices, *side, 3)))
    with _scratch() as folder:
        path = folder / "rgb.tif"
        tifffile.imwrite(path, stack, photometric="rgb", metadata={"axes": "ZYXS"})
        read = io.read_stack(path)

    assert read.axes == "ZYXC"
    np.testing.assert_array_equal(read.data, stack)


NAMES = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
    max_size=4,
    unique=True,
)


@SETTINGS
@given(
    data=st.data(),
    dtype=st.sampled_from([np.uint8, np.uint16, np.uint32, np.int64, bool]),
    shape=st.one_of(
        st.tuples(st.integers(1, 30), st.integers(1, 30)),
        st.tuples(st.integers(1, 4), st.integers(1, 30), st.integers(1, 30)),
    ),
    names=NAMES,
)
def test_any_label_mask_survives_the_labels_writer(data, dtype, shape, names):
    top = 1 if dtype is bool else min(np.iinfo(dtype).max, 2**32 - 1)
    elements = st.booleans() if dtype is bool else st.integers(0, top)
    labels = data.draw(hnp.arrays(dtype, shape, elements=elements))
    expected = labels if labels.ndim == 3 else labels[np.newaxis]
    with _scratch() as folder:
        tiff = io.write_labels_tiff(folder / "mask.tif", labels, class_names=tuple(names))
        read = io.read_stack(tiff)
        np.testing.assert_array_equal(read.data, expected.astype(np.int64))
        assert read.metadata == {"layer_type": "labels", "class_names": list(names)}
        if int(labels.max(initial=0)) <= 65535:
            files = io.write_labels_pngs(folder / "slices", labels)
            np.testing.assert_array_equal(io.read_stack(folder / "slices").data, expected)
            assert len(files) == expected.shape[0]


class _IdentityStep:
    """Stands in for the network: 'probabilities' that are the tile's pixels and 1 - them."""

    def __init__(self) -> None:
        self.tiles: list[tuple[int, int]] = []

    def __call__(self, tiles: np.ndarray) -> _IdentityStep:
        self.tiles.extend([tiles.shape[1:3]] * len(tiles))
        self._out = np.concatenate([tiles, 1.0 - tiles], axis=-1)
        return self

    def numpy(self) -> np.ndarray:
        return self._out


@pytest.fixture(scope="module")
def segmentation_engine():
    from napari_dlbio.models import segmentation

    return segmentation


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    depth=st.integers(1, 3),
    stem=st.sampled_from([1, 2]),
    tiles_per_side=st.integers(1, 4),
    slices=st.integers(1, 2),
    shape=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    seed=st.integers(0, 2**16),
)
def test_tiled_prediction_puts_every_pixel_back(
    data, depth, stem, tiles_per_side, slices, shape, seed, segmentation_engine, monkeypatch
):
    from napari_dlbio.core.config import Task
    from napari_dlbio.core.events import Finished, RunState, SlicePredicted, TileDone
    from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig
    from napari_dlbio.models.store import ModelFolder

    network = UNetConfig(depth=depth, stem_stride=stem, base_filters=1)
    tile = network.size_multiple * tiles_per_side
    overlap = data.draw(st.integers(0, (tile - 1) // 2), label="overlap")
    config = SegmentationConfig(
        network=network, patch_size=tile, tile_size=tile, tile_overlap=overlap
    )
    step = _IdentityStep()
    monkeypatch.setattr(segmentation_engine, "_predict_step", lambda model, channels: step)
    images = np.random.default_rng(seed).random((slices, *shape, 1), dtype=np.float32)
    model = ModelFolder(model=object(), task=Task.SEGMENTATION, config=config)

    events = list(segmentation_engine.iter_predict_slices(model, images, normalised=True))

    predicted = [event for event in events if isinstance(event, SlicePredicted)]
    assert [event.index for event in predicted] == list(range(slices))
    for event in predicted:
        assert event.probabilities.shape == (*shape, 2)
        np.testing.assert_allclose(event.probabilities[..., :1], images[event.index], atol=2e-6)
        np.testing.assert_allclose(event.probabilities.sum(axis=-1), 1.0, atol=2e-6)
    done = [event for event in events if isinstance(event, TileDone)]
    assert [event.index for event in done] == list(range(1, len(step.tiles) + 1))
    assert all(event.total == len(step.tiles) for event in done)
    assert all(
        h % network.size_multiple == 0 and w % network.size_multiple == 0 for h, w in step.tiles
    )
    assert events[-1] == Finished(RunState.DONE)


def _class_arrays(min_dims: int) -> st.SearchStrategy:
    """(number of classes, (true classes, predicted classes, valid pixels))."""
    return st.integers(1, 5).flatmap(
        lambda n: st.tuples(
            st.just(n),
            hnp.array_shapes(min_dims=min_dims, max_dims=3, max_side=10).flatmap(
                lambda shape: st.tuples(
                    hnp.arrays(np.int64, shape, elements=st.integers(0, n - 1)),
                    hnp.arrays(np.int64, shape, elements=st.integers(0, n - 1)),
                    hnp.arrays(bool, shape),
                )
            ),
        )
    )


CLASS_ARRAYS = _class_arrays(min_dims=1)


@settings(max_examples=80, deadline=None)
@given(case=CLASS_ARRAYS)
def test_iou_and_dice_are_symmetric(case):
    n_classes, (true, predicted, valid) = case
    forward = confusion_matrix(true, predicted, n_classes, valid)
    backward = confusion_matrix(predicted, true, n_classes, valid)
    np.testing.assert_array_equal(backward, forward.T)
    for figure in (iou_per_class, dice_per_class):
        np.testing.assert_allclose(figure(backward), figure(forward), equal_nan=True)


@settings(max_examples=80, deadline=None)
@given(case=CLASS_ARRAYS)
def test_a_perfect_prediction_scores_one_for_every_present_class(case):
    n_classes, (true, _, valid) = case
    cm = confusion_matrix(true, true, n_classes, valid)
    present = np.bincount(true[valid], minlength=n_classes) > 0
    np.testing.assert_array_equal(iou_per_class(cm)[present], 1.0)
    np.testing.assert_array_equal(dice_per_class(cm)[present], 1.0)
    assert np.isnan(iou_per_class(cm)[~present]).all()
    if valid.any():
        assert pixel_accuracy(cm) == 1.0


@settings(max_examples=80, deadline=None)
@given(case=_class_arrays(min_dims=2), seed=st.integers(0, 2**16))
def test_unannotated_pixels_never_change_a_score(case, seed):
    n_classes, (true, predicted, valid) = case
    rng = np.random.default_rng(seed)
    # Anything may be predicted (or be 'true') where nobody annotated.
    other_true = np.where(valid, true, rng.integers(0, n_classes, true.shape))
    other_predicted = np.where(valid, predicted, rng.integers(0, n_classes, true.shape))
    names = [f"class {i}" for i in range(n_classes)]
    report = segmentation_report(true, predicted, names, valid)
    assert segmentation_report(other_true, other_predicted, names, valid) == report
    for figures in report["classes"].values():
        for key in ("iou", "dice"):
            assert figures[key] is None or 0.0 <= figures[key] <= 1.0
