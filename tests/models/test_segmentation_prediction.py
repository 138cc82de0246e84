"""Tiled prediction: any size and slice count, seamless tiles, events, cancel, evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import ConfigError, InputDataError, ModelFolderError
from napari_dlbio.core.events import (
    CancelToken,
    Finished,
    Notice,
    RunState,
    SlicePredicted,
    TileDone,
    run_to_end,
)
from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig
from napari_dlbio.core.tiling import tile_grid
from napari_dlbio.models._tf import load_keras, load_tensorflow
from napari_dlbio.models.segmentation import (
    _predict_step,
    evaluate_segmentation,
    iter_predict_segmentation,
    iter_predict_slices,
    predict_segmentation,
    train_segmentation,
)
from napari_dlbio.models.store import ModelFolder
from napari_dlbio.models.unet import build_unet

keras = load_keras()

CONFIG = SegmentationConfig(
    # Full resolution: blobs of radius 4 are small for a net working on 2 x 2 blocks after
    # this short training (the default stem is covered by the ISBI test and benchmarks).
    network=UNetConfig(depth=3, base_filters=8, stem_stride=1),
    patch_size=64,
    batch_size=4,
    learning_rate=0.01,
    epochs=3,
    steps_per_epoch=12,
    validation_fraction=0.0,
    tile_size=64,
    tile_overlap=16,
    augment_elastic=False,
)


def _blobs(n_slices, height, width, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    foreground = np.zeros((n_slices, height, width), bool)
    for z in range(n_slices):
        for _ in range(max(2, height * width // 600)):
            cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(4, 10)
            foreground[z] |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    images = (60 + 120 * foreground + rng.normal(0, 20, foreground.shape)).clip(0, 255)
    return images.astype(np.uint8), np.where(foreground, 2, 1).astype(np.uint8)


@pytest.fixture(scope="module")
def model() -> ModelFolder:
    keras.utils.set_random_seed(0)
    images, annotations = _blobs(4, 96, 96)
    return train_segmentation(images, annotations, CONFIG).model


def _with_tiles(folder: ModelFolder, tile: int, overlap: int) -> ModelFolder:
    config = folder.config.replace(tile_size=tile, tile_overlap=overlap)
    return ModelFolder(model=folder.model, task=folder.task, config=config)


def test_any_size_and_slice_count_gives_mask_and_probabilities(model):
    for shape in ((3, 70, 131), (1, 17, 9), (200, 45)):
        images, _ = _blobs(1, *shape[-2:])
        images = images[0] if len(shape) == 2 else np.repeat(images, shape[0], axis=0)
        prediction = predict_segmentation(model, images)
        expected = (1, *shape) if len(shape) == 2 else shape
        assert prediction.mask.shape == expected
        assert prediction.mask.dtype == np.uint8
        assert prediction.probabilities.shape == (*expected, 2)
        assert prediction.probabilities.dtype == np.float32
        np.testing.assert_allclose(prediction.probabilities.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(prediction.mask, prediction.probabilities.argmax(-1))


def test_the_trained_model_finds_the_blobs(model):
    images, annotations = _blobs(2, 128, 160, seed=3)
    prediction = predict_segmentation(model, images)
    report = evaluate_segmentation(prediction.mask, annotations, CONFIG.class_names)
    assert report["classes"]["membrane"]["iou"] > 0.8


def _seam_error(tiled: np.ndarray, whole: np.ndarray, windows, band: int = 4):
    """Mean |difference| on pixels near inner tile borders, and elsewhere."""
    near = np.zeros(whole.shape[1:3], bool)
    for rows, cols in windows:
        for edge in (rows.start, rows.stop):
            if 0 < edge < near.shape[0]:
                near[max(edge - band, 0) : edge + band, cols] = True
        for edge in (cols.start, cols.stop):
            if 0 < edge < near.shape[1]:
                near[rows, max(edge - band, 0) : edge + band] = True
    difference = np.abs(tiled - whole)[..., 1]
    return difference[:, near].mean(), difference[:, ~near].mean(), near


def test_tile_borders_are_indistinguishable_from_the_interior(model):
    images, _ = _blobs(2, 256, 256, seed=7)
    whole = predict_segmentation(_with_tiles(model, 256, 0), images)
    blended = predict_segmentation(_with_tiles(model, 128, 32), images)
    windows = tile_grid((256, 256), 128, 32)
    at_seams, inside, near = _seam_error(blended.probabilities, whole.probabilities, windows)
    assert near.mean() > 0.05
    # Blending keeps the seams as close to the one-tile prediction as the interior is.
    assert at_seams < 0.01
    assert at_seams < 2 * inside + 1e-3
    assert (blended.mask == whole.mask).mean() > 0.995
    # Without overlap the seams are visibly worse, so the figures above do measure seams.
    hard = predict_segmentation(_with_tiles(model, 128, 0), images)
    hard_seams, _, _ = _seam_error(
        hard.probabilities, whole.probabilities, tile_grid((256, 256), 128, 0)
    )
    assert hard_seams > 5 * at_seams


def test_tile_events_count_every_tile_and_end_with_finished(model):
    images, _ = _blobs(3, 100, 150)
    job = iter_predict_segmentation(_with_tiles(model, 64, 16), images)
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            result = stop.value
            break
    tiles = [event for event in events if isinstance(event, TileDone)]
    n_tiles = 3 * len(tile_grid((112, 160), 64, 16))
    assert [event.index for event in tiles] == list(range(1, n_tiles + 1))
    assert {event.total for event in tiles} == {n_tiles}
    assert events[-1] == Finished(RunState.DONE)
    assert result.mask.shape == (3, 100, 150)


def test_cancel_stops_prediction_and_returns_none(model):
    images, _ = _blobs(6, 300, 300)
    cancel = CancelToken()
    # Four 256 x 256 tiles per slice make one batch each, so there is a batch to skip.
    job = iter_predict_segmentation(_with_tiles(model, 256, 32), images, cancel=cancel)
    events = []
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            result = stop.value
            break
        events.append(event)
        if isinstance(event, TileDone):
            cancel.cancel()
    assert result is None
    assert events[-1] == Finished(RunState.CANCELLED)
    done = [event for event in events if isinstance(event, TileDone)]
    assert done[-1].index < done[-1].total


def test_the_compiled_step_is_traced_once_and_reused_across_sizes(model):
    for shape in ((1, 64, 64), (2, 100, 37), (1, 300, 200)):
        predict_segmentation(model, _blobs(*shape)[0])
    assert _predict_step(model.model, 1).experimental_get_tracing_count() == 1


def test_dtypes_do_not_change_the_prediction(model):
    images, _ = _blobs(2, 64, 96)
    reference = predict_segmentation(model, images).mask
    variants = [
        images.astype(np.uint16) * 257,
        images.astype(np.float32) / 255.0,
    ]
    for variant in variants:
        assert (predict_segmentation(model, variant).mask == reference).mean() > 0.999


def test_a_grey_image_saved_as_rgb_is_the_grey_image_to_a_grey_model(model):
    images, _ = _blobs(2, 64, 96)
    reference = predict_segmentation(model, images)
    rgb = np.repeat(images[..., None], 3, axis=-1)
    rgba = np.concatenate([rgb, np.full((*images.shape, 1), 255, np.uint8)], axis=-1)
    for variant in (rgb, rgba, rgb[0]):
        prediction = predict_segmentation(model, variant)
        np.testing.assert_array_equal(prediction.mask, reference.mask[: len(prediction.mask)])
        np.testing.assert_array_equal(
            prediction.probabilities, reference.probabilities[: len(prediction.mask)]
        )


def _colour(images: np.ndarray) -> np.ndarray:
    """A colour photo of ``images``: the blobs are green, the rest keeps its red and blue."""
    rng = np.random.default_rng(5)
    other = rng.integers(0, 255, images.shape, dtype=np.uint8)
    return np.stack([other, images, 255 - other], axis=-1)


def test_a_grey_model_refuses_a_colour_image_naming_both(model):
    images, _ = _blobs(2, 64, 64)
    for colour in (_colour(images), _colour(images)[0]):
        job = iter_predict_segmentation(model, colour)
        with pytest.raises(InputDataError) as caught:
            next(job)  # before the first tile
        message = str(caught.value)
        assert "trained on grey images (1 channel)" in message
        assert "the image has 3 colour channels (RGB)" in message
        assert "convert the image to grey first" in message


def test_a_colour_model_refuses_a_grey_image_naming_both():
    config = CONFIG.replace(input_channels=3)
    network = build_unet(config.network, config.input_channels, config.n_classes)
    colour_model = ModelFolder(model=network, task=Task.SEGMENTATION, config=config)
    images, _ = _blobs(1, 32, 32)
    with pytest.raises(InputDataError) as caught:
        predict_segmentation(colour_model, images)
    message = str(caught.value)
    assert "trained on colour images (3 channels, RGB)" in message
    assert "the image is grey (1 channel)" in message
    # The same image saved as RGB has the three channels the model takes.
    rgb = np.repeat(images[..., None], 3, axis=-1)
    assert predict_segmentation(colour_model, rgb).mask.shape == images.shape


def test_a_stack_is_checked_slice_by_slice_as_it_streams(model, monkeypatch):
    from napari_dlbio.models import segmentation

    # One 32 x 32 tile per network call, so every slice is predicted before the next is read.
    monkeypatch.setattr(segmentation, "PREDICT_PIXELS_PER_BATCH", 32 * 32)
    images, _ = _blobs(3, 32, 32)
    stack = np.repeat(images[..., None], 3, axis=-1)
    stack[2] = _colour(images[2])
    predicted = []

    def on_event(event):
        if isinstance(event, SlicePredicted):
            predicted.append(event.index)

    with pytest.raises(InputDataError, match="3 colour channels"):
        run_to_end(iter_predict_slices(model, stack), on_event)
    # The grey slices before the colour one were predicted; the colour one was refused.
    assert predicted == [0, 1]


def test_bad_images_and_models_are_refused(model):
    images, _ = _blobs(1, 32, 32)
    with pytest.raises(InputDataError, match="NaN"):
        predict_segmentation(model, np.where(images > 100, np.nan, images.astype(float)))
    with pytest.raises(InputDataError, match=r"grey images \(1 channel\) but the image has 2"):
        predict_segmentation(model, np.zeros((1, 32, 32, 2), np.uint8))
    from napari_dlbio.core.classifier_config import ClassifierConfig

    other = ModelFolder(model=model.model, task=Task.CLASSIFICATION, config=ClassifierConfig())
    with pytest.raises(ModelFolderError, match="classification model"):
        predict_segmentation(other, images)


def test_evaluation_ignores_unannotated_pixels_and_keeps_its_json_shape():
    mask = np.array([[[0, 1, 1, 0]]], np.uint8)
    annotation = np.array([[[1, 2, 0, 0]]], np.uint8)
    report = evaluate_segmentation(mask, annotation, ("background", "membrane"))
    assert report["pixel_accuracy"] == 1.0
    assert report["classes"]["membrane"] == {"iou": 1.0, "dice": 1.0, "pixels": 1}
    assert report["classes"]["background"]["pixels"] == 1
    assert report["slices"][0]["slice"] == 0
    with pytest.raises(InputDataError, match="shape"):
        evaluate_segmentation(mask[..., :2], annotation, ("background", "membrane"))
    with pytest.raises(InputDataError, match="label-values"):
        evaluate_segmentation(mask, annotation + 2, ("background", "membrane"))


def test_slices_stream_out_one_at_a_time_as_the_stack_prediction_has_them(model):
    images, _ = _blobs(3, 80, 100, seed=4)
    slices = [
        event
        for event in iter_predict_slices(_with_tiles(model, 64, 16), images)
        if isinstance(event, SlicePredicted)
    ]
    whole = predict_segmentation(_with_tiles(model, 64, 16), images)
    assert [event.index for event in slices] == [0, 1, 2]
    assert all(event.total == 3 for event in slices)
    for event in slices:
        np.testing.assert_allclose(event.probabilities, whole.probabilities[event.index])


def test_running_out_of_memory_predicts_fewer_tiles_at_a_time_and_says_so(model, monkeypatch):
    from napari_dlbio.models import segmentation

    tf = load_tensorflow()
    folder = _with_tiles(model, 64, 16)
    images, _ = _blobs(2, 100, 100, seed=5)
    expected = predict_segmentation(folder, images).probabilities
    real_step = segmentation._predict_step(folder.model, 1)

    def tight_memory(tiles):
        if len(tiles) > 2:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        return real_step(tiles)

    monkeypatch.setattr(segmentation, "_predict_step", lambda *_: tight_memory)
    events = []
    result = run_to_end(iter_predict_segmentation(folder, images), events.append)
    notices = [event.text for event in events if isinstance(event, Notice)]
    assert notices
    assert all("Out of memory" in text for text in notices)
    assert "2 tile(s) at a time" in notices[-1]
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)


def test_a_model_set_to_remove_specks_drops_small_regions_from_its_masks(model):
    from skimage.measure import label

    images, _ = _blobs(2, 128, 160, seed=3)
    plain = predict_segmentation(model, images)
    config = model.config.replace(min_region_pixels=80)
    cleaned = predict_segmentation(ModelFolder(model.model, model.task, config), images)

    np.testing.assert_array_equal(cleaned.probabilities, plain.probabilities)
    for before, after in zip(plain.mask, cleaned.mask, strict=True):
        sizes = np.bincount(label(after, connectivity=1).ravel())[1:]
        assert sizes.min() >= 80
        assert np.bincount(label(before, connectivity=1).ravel())[1:].min() < 80
        assert np.all(after <= before)  # only regions became background


def test_min_region_pixels_is_checked_and_older_configs_keep_every_region():
    settings = CONFIG.to_dict()
    del settings["min_region_pixels"]  # a model saved before the setting existed
    assert SegmentationConfig.from_dict(settings).min_region_pixels == 0
    with pytest.raises(ConfigError, match="smallest region"):
        CONFIG.replace(min_region_pixels=-1)
