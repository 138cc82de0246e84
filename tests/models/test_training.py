"""iter_fit: Keras training as a generator of events, cancellable within one batch."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_dlbio.core.events import (
    BatchEnded,
    CancelToken,
    EpochEnded,
    Finished,
    Notice,
    RunState,
    TrainingStarted,
    run_to_end,
)
from napari_dlbio.models._tf import load_keras, load_tensorflow
from napari_dlbio.models.training import build_optimizer, iter_fit

keras = load_keras()
tf = load_tensorflow()


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((64, 4), dtype=np.float32)
    y = (x[:, 0] > 0.5).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    return model, data


def test_events_arrive_in_order_and_the_result_holds_the_history():
    model, data = _problem()
    events = []
    result = run_to_end(
        iter_fit(
            model, data, epochs=3, steps_per_epoch=4, validation_data=data, validation_steps=2
        ),
        events.append,
    )
    assert isinstance(events[0], TrainingStarted)
    assert events[0].device.startswith(("CPU", "GPU"))
    assert events[-1] == Finished(RunState.DONE)
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert all("val_loss" in e.metrics for e in epochs)
    batches = [e for e in events if isinstance(e, BatchEnded)]
    assert len(batches) == 12
    assert batches[0].steps == 4
    assert result.state is RunState.DONE
    assert len(result.history["loss"]) == 3
    assert result.history["val_loss"][-1] < result.history["val_loss"][0]


def test_cancel_stops_within_one_batch_and_reports_cancelled():
    model, data = _problem()
    cancel = CancelToken()
    batches = []

    def on_event(event):
        if isinstance(event, BatchEnded):
            batches.append(event)
            if len(batches) == 3:
                cancel.cancel()

    result = run_to_end(
        iter_fit(model, data, epochs=50, steps_per_epoch=100, cancel=cancel), on_event
    )
    assert result.state is RunState.CANCELLED
    # The fit thread may already have queued a batch or two while the consumer reacted.
    assert len(batches) <= 3 + 2


def test_time_budget_ends_training_after_the_batch_that_spends_it(batch_clock):
    model, data = _problem()
    clock = batch_clock(1.0)
    events = []
    result = run_to_end(
        iter_fit(
            model,
            data,
            epochs=10_000,
            steps_per_epoch=10,
            time_budget_s=5.0,
            extra_callbacks=[clock.callback],
            clock=clock,
        ),
        events.append,
    )
    assert result.state is RunState.DONE
    # Batches end at 0, 1, ..., 5 s: the sixth finds the budget spent.
    assert sum(isinstance(event, BatchEnded) for event in events) == 6
    assert len(result.history["loss"]) == 1
    assert result.seconds == 6.0


def test_an_error_inside_training_reaches_the_consumer():
    model, data = _problem()

    class Explode(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("disk full while writing a checkpoint")

    with pytest.raises(RuntimeError, match="disk full"):
        run_to_end(iter_fit(model, data, epochs=2, steps_per_epoch=3, extra_callbacks=[Explode()]))
    assert not [t for t in threading.enumerate() if t.name == "dlbio-fit"]


def test_best_weights_are_restored_after_a_worse_last_epoch():
    model, data = _problem()

    class SpoilLastEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                self.model.set_weights([np.full_like(w, 50.0) for w in self.model.get_weights()])

    result = run_to_end(
        iter_fit(
            model,
            data,
            epochs=4,
            steps_per_epoch=4,
            validation_data=data,
            validation_steps=2,
            extra_callbacks=[SpoilLastEpoch()],
        )
    )
    assert result.best_epoch in (1, 2, 3)
    assert result.history["val_loss"][3] > min(result.history["val_loss"][:3])
    assert not np.allclose(model.get_weights()[0], 50.0)


def test_closing_the_generator_early_cancels_and_joins_the_thread():
    model, data = _problem()
    job = iter_fit(model, data, epochs=1000, steps_per_epoch=100)
    for event in job:
        if isinstance(event, BatchEnded):
            break
    job.close()
    assert not [t for t in threading.enumerate() if t.name == "dlbio-fit"]


def test_checkpoints_hold_best_and_last_weights(tmp_path):
    model, data = _problem()
    run_to_end(
        iter_fit(
            model,
            data,
            epochs=2,
            steps_per_epoch=2,
            validation_data=data,
            validation_steps=1,
            checkpoint_dir=tmp_path / "ckpt",
        )
    )
    assert (tmp_path / "ckpt" / "best.weights.h5").is_file()
    assert (tmp_path / "ckpt" / "last.weights.h5").is_file()


def test_running_out_of_memory_trains_each_batch_in_smaller_parts_and_says_so():
    model, data = _problem()
    real_step = model.train_on_batch
    sizes = []

    def tight_memory(x, y, **kwargs):
        if len(x) > 4:  # the device holds at most 4 samples
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        sizes.append(len(x))
        return real_step(x, y, **kwargs)

    model.train_on_batch = tight_memory
    events = []
    result = run_to_end(iter_fit(model, data, epochs=2, steps_per_epoch=3), events.append)
    assert result.state is RunState.DONE
    notices = [event.text for event in events if isinstance(event, Notice)]
    assert len(notices) == 2  # 16 -> 8 -> 4 patches per step, said once each
    assert "about 4 patch(es) per step" in notices[-1]
    assert sizes == [4] * 4 * 6  # every batch of 16 trained, in four parts
    assert len(result.history["loss"]) == 2


def test_a_finished_run_leaves_no_gradient_function_pinning_its_model():
    from napari_dlbio.models._tf import _gradient_registry

    registry = _gradient_registry()
    before = {name for name in registry if name.startswith("CustomGradient-")}
    model, data = _problem()
    run_to_end(iter_fit(model, data, epochs=1, steps_per_epoch=2))
    after = {name for name in registry if name.startswith("CustomGradient-")}
    assert after <= before  # tensorflow#80895: each traced step added one, for good


def test_epoch_figures_cover_every_batch_not_only_the_last():
    model, data = _problem()
    rng = np.random.default_rng(1)
    x = rng.random((40, 4), dtype=np.float32)
    # The last validation batch (8 samples) is labelled the other way round: a figure
    # taken from it alone would be far from the whole set's.
    y = np.concatenate([x[:32, 0] > 0.5, x[32:, 0] <= 0.5]).astype("float32")
    validation = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    events = []
    result = run_to_end(
        iter_fit(model, data, epochs=1, steps_per_epoch=40, validation_data=validation),
        events.append,
    )
    losses = [event.loss for event in events if isinstance(event, BatchEnded)]
    assert result.history["loss"][0] == pytest.approx(np.mean(losses), rel=1e-5)
    whole = model.evaluate(validation, verbose=0, return_dict=True)["loss"]
    last_batch = model.evaluate(x[32:], y[32:], verbose=0, return_dict=True)["loss"]
    assert abs(whole - last_batch) > 0.1
    assert result.history["val_loss"][0] == pytest.approx(whole, rel=1e-5)


@pytest.mark.parametrize("built_first", [False, True])
def test_the_first_training_step_is_traced_once_with_the_optimizer_built_first(built_first):
    # Keras creates Adam's variables while tracing the first step, and TensorFlow then
    # traces it again: 8-9 s of a 10 s fine-tuning burst for the interactive U-Net.
    traces = []

    class CountTraces(keras.layers.Layer):
        def call(self, x):
            traces.append(1)  # runs once per trace, never when the graph runs
            return x

    model = keras.Sequential([keras.Input((4,)), CountTraces(), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    if built_first:
        build_optimizer(model)
    x, y = np.ones((8, 4), np.float32), np.ones((8, 1), np.float32)
    built = len(traces)  # building the model called the layer on symbolic inputs
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    assert len(traces) - built == (1 if built_first else 2)
