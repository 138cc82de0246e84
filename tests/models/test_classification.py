"""The classification engine: events, cancel, budget, fine-tuning, prediction, evaluation."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from napari_dlbio.core.classifier_config import ClassifierConfig
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import (
    BatchEnded,
    CancelToken,
    EpochEnded,
    Finished,
    Notice,
    RunState,
    TileDone,
    TrainingStarted,
    run_to_end,
)
from napari_dlbio.models._tf import load_keras
from napari_dlbio.models.classification import (
    PREDICT_BATCH,
    evaluate_classifier,
    iter_predict_classifier,
    iter_train_classifier,
    predict_classifier,
    train_classifier,
)
from napari_dlbio.models.classifier import POOLING_LAYER
from napari_dlbio.models.store import load_model_folder, save_model_folder

TINY = ClassifierConfig(
    input_size=32, filters=8, blocks=3, convs_per_block=1, stem_stride=1, batch_size=8, epochs=3
)
COLOURS = np.array([(200, 30, 30), (30, 200, 30), (30, 30, 200)], np.uint8)


def _colour_images(n: int, seed: int = 0, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose class is their dominant colour."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    noise = rng.integers(-30, 30, (n, size, size, 3))
    images = np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels


@pytest.fixture(scope="module")
def trained() -> tuple[list, object]:
    images, labels = _colour_images(60)
    events: list = []
    result = run_to_end(iter_train_classifier(images, labels, TINY), events.append)
    return events, result


def test_training_events_come_in_order(trained):
    events, result = trained
    kinds = [type(event) for event in events]

    assert kinds[0] is Notice
    assert kinds.index(TrainingStarted) < kinds.index(BatchEnded) < kinds.index(EpochEnded)
    assert kinds[-1] is Finished
    assert events[-1].state is RunState.DONE
    epochs = [event for event in events if isinstance(event, EpochEnded)]
    assert [event.epoch for event in epochs] == [1, 2, 3]
    assert {"accuracy", "val_loss", "val_accuracy"} <= set(epochs[0].metrics)
    assert "48 images of 3 classes" in events[0].text
    assert result.fit.state is RunState.DONE


def test_training_learns_and_records_what_prediction_needs(trained):
    _, result = trained
    config = result.model.config
    metrics = result.model.metrics

    assert metrics["val_accuracy"] >= 0.9
    assert config.class_names == ("class 0", "class 1", "class 2")
    assert len(config.channel_mean) == 3
    assert all(std > 0 for std in config.channel_std)
    assert metrics["validation"]["confusion_matrix"]
    assert len(result.model.history["loss"]) == 3


def test_saved_model_predicts_the_same_after_loading(trained, tmp_path: Path):
    _, result = trained
    images, _ = _colour_images(9, seed=1)
    before = predict_classifier(result.model, images)

    folder = result.model
    save_model_folder(tmp_path / "model", folder.model, folder.task, folder.config)
    after = predict_classifier(load_model_folder(tmp_path / "model"), images)

    assert np.allclose(after.probabilities, before.probabilities, atol=1e-6)
    assert after.class_names == ("class 0", "class 1", "class 2")


def test_prediction_takes_any_mix_of_sizes_and_colour_modes(trained):
    _, result = trained
    images, labels = _colour_images(3, seed=2, size=70)
    mixed = [images[0], images[1][:50, :30], np.dstack([images[2], np.full((70, 70), 255)])]
    grey = images[0].mean(axis=2).astype(np.uint8)

    prediction = predict_classifier(result.model, [*mixed, grey])

    assert prediction.probabilities.shape == (4, 3)
    assert prediction.probabilities.dtype == np.float32
    assert np.array_equal(prediction.predicted[:3], labels)


def test_prediction_reports_batches_and_can_be_cancelled(trained):
    _, result = trained
    images, _ = _colour_images(PREDICT_BATCH + 5, size=32)
    events: list = []

    run_to_end(iter_predict_classifier(result.model, images), events.append)

    tiles = [event for event in events if isinstance(event, TileDone)]
    assert [(t.index, t.total) for t in tiles] == [(1, 2), (2, 2)]
    cancel = CancelToken()
    cancel.cancel()
    events.clear()
    assert (
        run_to_end(iter_predict_classifier(result.model, images, cancel=cancel), events.append)
        is None
    )
    assert events == [Finished(RunState.CANCELLED)]


def test_evaluation_report(trained):
    _, result = trained
    images, labels = _colour_images(12, seed=3)

    report = evaluate_classifier(result.model, images, labels)

    assert report["accuracy"] >= 0.9
    assert report["classes"]["class 1"]["support"] == 4
    assert np.array(report["confusion_matrix"]).sum() == 12
    with pytest.raises(InputDataError, match="from 0 to 2"):
        evaluate_classifier(result.model, images, labels + 1)


def test_cancel_stops_within_the_first_epoch():
    images, labels = _colour_images(60)
    cancel = CancelToken()
    events: list = []

    def stop_early(event: object) -> None:
        events.append(event)
        if isinstance(event, BatchEnded):
            cancel.cancel()

    result = run_to_end(
        iter_train_classifier(images, labels, TINY.replace(epochs=50), cancel=cancel), stop_early
    )

    assert result.fit.state is RunState.CANCELLED
    assert events[-1] == Finished(RunState.CANCELLED)
    assert result.model.metrics["epochs_run"] <= 1
    assert sum(isinstance(event, BatchEnded) for event in events) < 6


def test_time_budget_ends_training(batch_clock):
    images, labels = _colour_images(30)
    config = TINY.replace(epochs=1000, time_budget_s=4.0, early_stopping_patience=None)
    clock = batch_clock(1.0)

    events: list = []
    result = run_to_end(
        iter_train_classifier(images, labels, config, callbacks=[clock.callback], clock=clock),
        events.append,
    )

    assert result.fit.state is RunState.DONE
    # Batches end at 0, 1, ..., 4 s of the budget: the fifth finds it spent.
    assert sum(isinstance(event, BatchEnded) for event in events) == 5
    assert result.fit.seconds == 5.0
    assert 1 < result.model.metrics["epochs_run"] < 1000


def test_fine_tuning_keeps_the_models_classes_and_normalisation(trained):
    _, first = trained
    images, labels = _colour_images(30, seed=4)
    other = TINY.replace(input_size=64, epochs=1)

    result = train_classifier(images, labels, other, initial=first.model)

    config = result.model.config
    assert config.class_names == first.model.config.class_names
    assert config.input_size == 32
    assert config.channel_mean == first.model.config.channel_mean
    assert config.epochs == 1
    # Starting from trained weights, one epoch keeps the colours apart.
    assert result.model.metrics["val_accuracy"] >= 0.9


def _body(model: object) -> dict[str, list[np.ndarray]]:
    """The weights of every layer before the global pooling, by layer name."""
    body = {}
    for layer in model.layers:
        if layer.name == POOLING_LAYER:
            return body
        body[layer.name] = [np.array(weight) for weight in layer.get_weights()]
    raise AssertionError("no pooling layer")


def _same(a: dict[str, list[np.ndarray]], b: dict[str, list[np.ndarray]]) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(x, y) for name in a for x, y in zip(a[name], b[name], strict=True)
    )


@pytest.fixture(scope="module")
def red_or_green():
    """A tiny classifier of two classes, A (red) and B (green)."""
    images, labels = _colour_images(40)
    keep = labels < 2
    config = TINY.replace(class_names=("A", "B"))
    return train_classifier(images[keep], labels[keep], config).model


def test_transfer_to_new_classes_keeps_the_body_and_trains_a_new_top(red_or_green):
    keras = load_keras()
    snapshots: list[dict[str, list[np.ndarray]]] = []

    class BodySnapshots(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            snapshots.append(_body(self.model))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            snapshots.append(_body(self.model))

    images, labels = _colour_images(48, seed=5)
    config = TINY.replace(
        class_names=("C", "D", "E"),
        input_size=64,
        epochs=4,
        fine_tune_epochs=2,
        early_stopping_patience=None,
        # 20 steps of a new top on a body trained for 3 epochs need a brisk rate.
        learning_rate=1e-2,
    )
    events: list = []
    result = run_to_end(
        iter_train_classifier(
            images, labels, config, initial=red_or_green, callbacks=[BodySnapshots()]
        ),
        events.append,
    )

    model = result.model
    assert model.config.class_names == ("C", "D", "E")
    assert model.config.input_size == 32
    assert model.config.channel_mean == red_or_green.config.channel_mean
    assert model.model.output_shape == (None, 3)
    notices = [event.text for event in events if isinstance(event, Notice)]
    assert (
        "Starting from the model in memory: its network is kept, a new top is trained for "
        "your 3 classes (C, D, E), then the whole network is fine-tuned."
    ) in notices
    assert any(text.startswith("Fine-tuning the whole small CNN") for text in notices)
    start = _body(red_or_green.model)
    # Training begins, ends 4 frozen epochs, begins and ends 2 fine-tuning epochs.
    assert len(snapshots) == 1 + 4 + 1 + 2
    assert all(_same(snapshot, start) for snapshot in snapshots[:6])
    tuned = snapshots[-1]
    assert not np.array_equal(tuned["block1_conv1"][0], start["block1_conv1"][0])
    # Batch norm stays in inference mode: its moving statistics are never updated.
    assert all(
        np.array_equal(x, y)
        for x, y in zip(tuned["block1_conv1_bn"], start["block1_conv1_bn"], strict=True)
    )
    assert model.metrics["val_accuracy"] >= 0.9
    assert all(layer.trainable for layer in model.model.layers)


def test_fine_tuning_on_some_of_the_models_classes_keeps_them_all(trained):
    _, first = trained
    images, labels = _colour_images(30, seed=6)
    keep = labels != 1
    # Indices into the names given here, in another order than the model's.
    subset = np.where(labels[keep] == 2, 0, 1)
    config = TINY.replace(class_names=("class 2", "class 0"), epochs=1)
    events: list = []

    result = run_to_end(
        iter_train_classifier(images[keep], subset, config, initial=first.model), events.append
    )

    assert result.model.config.class_names == ("class 0", "class 1", "class 2")
    validation = result.model.metrics["validation"]["classes"]
    assert validation["class 1"]["support"] == 0
    assert validation["class 0"]["support"] > 0
    assert validation["class 2"]["support"] > 0
    assert result.model.metrics["val_accuracy"] >= 0.9
    notices = [event.text for event in events if isinstance(event, Notice)]
    assert any("show only 2 of them; it keeps class 1" in text for text in notices)


def test_unbalanced_classes_get_weights_in_the_notice():
    images, labels = _colour_images(40)
    labels = np.where(np.arange(40) < 30, 0, 1)
    events: list = []

    run_to_end(iter_train_classifier(images, labels, TINY.replace(epochs=1)), events.append)

    notice = next(event.text for event in events if isinstance(event, Notice))
    assert "Class weights: class 0 0.67, class 1 2.00." in notice


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros(12, int), "at least two classes"),
        (np.arange(11) % 2, "12 images but 11 class indices"),
        (np.arange(12) % 3 - 1, "whole numbers from 0"),
    ],
)
def test_unusable_class_indices_are_refused(labels: np.ndarray, message: str):
    images, _ = _colour_images(12)
    with pytest.raises(InputDataError, match=message):
        train_classifier(images, labels, TINY.replace(class_names=("a", "b", "c")))


def test_augmented_batches_stay_images_and_vary():
    from napari_dlbio.models.classification import _training_dataset

    images, labels = _colour_images(8, size=32)
    config = TINY.replace(brightness=0.2, zoom=0.3)
    plain = config.replace(augmentation=False)

    x, y, w = next(iter(_training_dataset(images, labels, None, config, 8)))
    x_plain, _, _ = next(iter(_training_dataset(images, labels, None, plain, 8)))

    assert x.shape == (8, 32, 32, 3)
    assert float(np.min(x)) >= 0.0
    assert float(np.max(x)) <= 255.0
    assert np.allclose(np.asarray(w), 1.0)
    assert not math.isclose(float(np.abs(np.asarray(x) - np.asarray(x_plain)).sum()), 0.0)
    # Without augmentation the batch holds exactly the given images, shuffled.
    flat = {bytes(image.astype(np.uint8)) for image in np.asarray(x_plain)}
    assert flat <= {bytes(image) for image in images}
    assert set(np.asarray(y)) <= {0, 1, 2}


def test_predictions_say_which_images_the_model_was_trained_on(trained):
    _, result = trained
    images, _ = _colour_images(60)
    prediction = predict_classifier(result.model, images)
    seen = prediction.seen_in_training
    # A fifth is held out for validation; new images were never seen.
    assert seen.sum() == 60 - result.model.metrics["validation_images"]
    fresh, _ = _colour_images(6, seed=9)
    assert not predict_classifier(result.model, fresh).seen_in_training.any()


def test_a_classifier_that_learned_its_images_by_heart_is_reported():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(30) % 3  # no relation to the pixels: nothing to learn but the images
    config = TINY.replace(epochs=60, early_stopping_patience=None, augmentation=False, dropout=0.0)
    events: list = []
    run_to_end(iter_train_classifier(noise, labels, config), events.append)
    notices = [event.text for event in events if isinstance(event, Notice)]
    assert any("overfitting" in text for text in notices), notices


def test_test_time_augmentation_gives_a_photo_one_answer_in_every_orientation(trained):
    """With it, a turned or mirrored photo gets exactly the probabilities of the original."""
    _, result = trained
    images, _ = _colour_images(6, seed=4, size=32)
    images[:, :8] = 0  # a dark band on top: the orientation now matters to the network
    plain = result.model
    averaged = replace(plain, config=plain.config.replace(test_time_augmentation=True))

    def probabilities(model, views):
        return predict_classifier(model, views).probabilities

    turned, mirrored = np.rot90(images, 1, axes=(1, 2)), images[:, :, ::-1]
    upright = probabilities(averaged, images)
    assert np.allclose(probabilities(averaged, turned), upright, atol=1e-5)
    assert np.allclose(probabilities(averaged, mirrored), upright, atol=1e-5)
    # The average of the 8 views the plain model sees one by one.
    views = [np.rot90(images, k, axes=(1, 2)) for k in range(4)]
    views += [view[:, :, ::-1] for view in views]
    expected = np.mean([probabilities(plain, view) for view in views], axis=0)
    assert np.allclose(upright, expected, atol=1e-5)
    assert not np.allclose(probabilities(plain, turned), probabilities(plain, images), atol=1e-5)
