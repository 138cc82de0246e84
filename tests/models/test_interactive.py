"""Fine-tuning bursts on painted corrections (human in the loop)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import BatchEnded, CancelToken, Finished, RunState, run_to_end
from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig
from napari_dlbio.models._tf import load_keras
from napari_dlbio.models.interactive import FineTuner, _mixed_batch
from napari_dlbio.models.segmentation import predict_segmentation

keras = load_keras()

CONFIG = SegmentationConfig(network=UNetConfig(depth=2, base_filters=8), augment_elastic=False)
BURSTS = {"learning_rate": 0.01, "patch_size": 48, "batch_size": 8}


def _bright_squares(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Slices with bright squares (class 1) on a dark noisy background, and the truth."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((2, 96, 96), np.uint8)
    for z in range(2):
        for _ in range(5):
            y, x = rng.integers(0, 80, 2)
            truth[z, y : y + 14, x : x + 14] = 1
    images = (50 + 140 * truth + rng.normal(0, 15, truth.shape)).clip(0, 255).astype(np.uint8)
    return images, truth


def _scribbles(truth: np.ndarray) -> np.ndarray:
    """A few annotated pixels of each class on slice 0 only."""
    annotation = np.zeros_like(truth)
    rng = np.random.default_rng(1)
    for value in (0, 1):
        ys, xs = np.nonzero(truth[0] == value)
        chosen = rng.choice(ys.size, 40, replace=False)
        annotation[0, ys[chosen], xs[chosen]] = value + 1
    return annotation


def test_scribbles_on_one_slice_train_a_usable_model_from_scratch():
    keras.utils.set_random_seed(0)
    images, truth = _bright_squares()
    annotation = _scribbles(truth)
    tuner = FineTuner(CONFIG, **BURSTS)
    events = []
    burst = tuner.iter_burst(images, annotation, seconds=math.inf, steps=60)
    model = run_to_end(burst, events.append)
    assert sum(isinstance(event, BatchEnded) for event in events) == 60
    assert events[-1] == Finished(RunState.DONE)
    mask = predict_segmentation(model, images[1]).mask[0]
    # Slice 1 was never annotated: the model generalised from slice 0's scribbles.
    assert np.mean(mask == truth[1]) > 0.9


def test_bursts_continue_the_same_network_and_leave_the_annotation_alone():
    images, truth = _bright_squares()
    annotation = _scribbles(truth)
    before = annotation.copy()
    tuner = FineTuner(CONFIG, **BURSTS)
    first = run_to_end(tuner.iter_burst(images, annotation, seconds=math.inf, steps=2))
    second = run_to_end(tuner.iter_burst(images, annotation, seconds=math.inf, steps=2))
    assert first.model is second.model  # the compiled network is kept between bursts
    np.testing.assert_array_equal(annotation, before)


def test_scratch_learns_fast_and_a_trained_model_is_tuned_gently():
    from napari_dlbio.models.interactive import BURST_LEARNING_RATE, SCRATCH_LEARNING_RATE

    scratch = FineTuner(SegmentationConfig.interactive())
    assert scratch.config.network == UNetConfig(depth=3, stem_stride=1, base_filters=8)
    assert scratch.config.learning_rate == SCRATCH_LEARNING_RATE
    tuned = FineTuner(SegmentationConfig(), scratch.model)
    assert tuned.config.network == scratch.config.network  # the model's own network
    assert tuned.config.learning_rate == BURST_LEARNING_RATE < SCRATCH_LEARNING_RATE


def test_a_fine_tuner_warm_starts_from_a_trained_model():
    images, truth = _bright_squares()
    source = FineTuner(CONFIG, **BURSTS)
    run_to_end(source.iter_burst(images, _scribbles(truth), seconds=math.inf, steps=2))
    tuner = FineTuner(CONFIG, source.model, **(BURSTS | {"learning_rate": 1e-9}))
    before = predict_segmentation(source.model, images).probabilities
    after = predict_segmentation(tuner.model, images).probabilities
    np.testing.assert_allclose(after, before, atol=1e-6)


def test_a_quarter_of_every_batch_is_drawn_around_the_recent_corrections():
    images, truth = _bright_squares()
    annotation = _scribbles(truth)
    annotation[1, 80:96, 80:96] = 2  # a correction in a corner of the other slice
    recent = np.zeros(annotation.shape, bool)
    recent[1, 80:96, 80:96] = True
    tuner = FineTuner(CONFIG, **BURSTS)
    normalised = tuner._prepare(images)
    everything = tuner._sampler(normalised, annotation)
    fresh = tuner._sampler(normalised, annotation, centres=recent)
    _, labels = _mixed_batch(everything, fresh, 8)
    corner_patches = [bool((patch == 2).sum() >= 100) for patch in labels]
    assert all(corner_patches[-2:])  # a quarter of the batch
    assert tuner.config.batch_size == 8  # the burst settings replace the config's


def test_a_burst_leaves_batch_norm_statistics_of_the_images_not_stale_ones():
    images, truth = _bright_squares()
    tuner = FineTuner(CONFIG, **BURSTS)
    norms = [layer for layer in tuner._network.layers if "bn" in layer.name]
    for layer in norms:
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 1e3, np.float32))
    run_to_end(tuner.iter_burst(images, _scribbles(truth), seconds=0.0))  # no step at all
    means = np.concatenate([np.asarray(layer.moving_mean) for layer in norms])
    assert np.isfinite(means).all()
    assert np.abs(means).max() < 100  # recomputed from the images, even without a step


def test_a_cancelled_burst_stops_at_once():
    images, truth = _bright_squares()
    cancel = CancelToken()
    cancel.cancel()
    tuner = FineTuner(CONFIG, **BURSTS)
    events = []
    run_to_end(
        tuner.iter_burst(images, _scribbles(truth), seconds=12.5, steps=30, cancel=cancel),
        events.append,
    )
    assert events[0].time_budget_s == 12.5  # the length a progress bar shows
    assert events[-1] == Finished(RunState.CANCELLED)
    assert not any(isinstance(event, BatchEnded) for event in events)


def test_an_empty_annotation_asks_for_strokes():
    images, truth = _bright_squares()
    with pytest.raises(InputDataError, match="annotated"):
        run_to_end(
            FineTuner(CONFIG, **BURSTS).iter_burst(
                images, np.zeros_like(truth), seconds=math.inf, steps=2
            )
        )


def test_a_burst_refuses_images_whose_channels_do_not_fit_the_model():
    images, truth = _bright_squares()
    rng = np.random.default_rng(2)
    colour = np.stack([images, rng.integers(0, 255, images.shape, np.uint8), images], axis=-1)
    tuner = FineTuner(CONFIG, **BURSTS)  # a grey network (CONFIG takes 1 channel)
    with pytest.raises(InputDataError, match=r"grey images \(1 channel\) but the image has 3"):
        next(tuner.iter_burst(colour, _scribbles(truth), seconds=math.inf, steps=1))
    # The same grey images saved as RGB are the grey images.
    grey_rgb = np.repeat(images[..., None], 3, axis=-1)
    events = []
    run_to_end(
        tuner.iter_burst(grey_rgb, _scribbles(truth), seconds=math.inf, steps=1), events.append
    )
    assert events[-1] == Finished(RunState.DONE)
