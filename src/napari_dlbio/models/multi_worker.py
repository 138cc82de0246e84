"""Training by several processes (workers) that keep one model in step, batch by batch.

Keras 3 cannot run ``model.fit``, ``model.evaluate`` or ``train_on_batch`` under
``MultiWorkerMirroredStrategy`` with more than one worker (keras-team/keras#20585; in
keras/src/backend/tensorflow/trainer.py, checked with Keras 3.15.1 and TensorFlow 2.21):
``fit`` and ``evaluate`` first average an input batch over the workers with a collective
that does not take a tuple (``_maybe_symbolic_build``), and the compiled step averages
each scalar loss and metric along an axis it does not have (``reduce_per_replica``).
:class:`WorkerSteps` runs the model's own ``train_step`` and ``test_step`` instead, in
compiled functions of its own, and :func:`~napari_dlbio.models.training.iter_fit` drives
them batch by batch.  Each worker trains on its own batches; Keras' optimizer sums the
gradients over all workers, so every worker applies the same update.

Every worker must decide to stop at the same batch, or the others wait for it in their next
collective for ever.  The figures that early stopping reads are averaged over the workers,
so they are equal everywhere; the clock (time budget, learning-rate decay) and the user's
stop request (Ctrl+C on one node) are made equal by :class:`WorkerAgreement`, which also
averages the batch-norm statistics, so that all workers end with the same model.

Workaround to re-check on a Keras upgrade: the compiled metrics' variables are created by
Keras' private ``Model._maybe_symbolic_build`` from a first batch's shapes, as
``train_on_batch`` does (they cannot be created inside a replica function).  Once a
two-worker ``model.fit`` runs (tests/test_multi_worker_training.py shows how to start two),
this module can go.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any

from napari_dlbio.core.events import CancelToken
from napari_dlbio.models._tf import load_keras, load_tensorflow

tf = load_tensorflow()
keras = load_keras()


def spans_workers(strategy: Any) -> bool:
    """Whether ``strategy`` trains with replicas in other processes."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )


class WorkerAgreement(keras.callbacks.Callback):
    """What the workers must agree on beyond the gradients, agreed after every batch.

    After every batch and every epoch, the workers average their seconds since training
    began and learn whether any of them was asked to stop (one small all-reduce).  Give
    :attr:`clock` and :attr:`cancel` to the callbacks that decide when to stop (the time
    budget, Stop / Ctrl+C) or read the time (learning-rate decay), and this callback to
    the training run, after them: they then decide alike on every worker, one batch after
    the request.  At the end of each epoch's training steps, every worker takes the mean
    of the workers' batch-norm moving statistics (each worker's batch norm follows its own
    batches), so validation, the best weights kept and the saved model are the same on
    every worker.

    Parameters
    ----------
    strategy
        The ``MultiWorkerMirroredStrategy`` the model trains under.
    cancel
        This process's stop request (Ctrl+C, a Stop button).
    clock
        This process's clock: seconds from any fixed point.
    """

    def __init__(self, strategy: Any, cancel: CancelToken, clock: Callable[[], float]) -> None:
        super().__init__()
        self._strategy = strategy
        self._request = cancel
        self._local_clock = clock
        self._started = clock()
        self._elapsed = 0.0
        self._mean = tf.function(self._mean_over_workers, reduce_retracing=True, autograph=False)
        self.cancel = CancelToken()
        """Cancelled on every worker at the same batch once any worker was asked to stop."""

    def clock(self) -> float:
        """Seconds since training began, as the workers last agreed on them."""
        return self._elapsed

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._started = self._local_clock()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._agree()
        # The callbacks before this one have decided alike whether the epoch ends here.
        if self.model.stop_training or batch + 1 == self.params["steps"]:
            self._average_statistics()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._agree()

    def _agree(self) -> None:
        mine = tf.constant(
            [self._local_clock() - self._started, float(self._request.cancelled)], tf.float32
        )
        elapsed, stops = self._mean(mine).numpy().tolist()
        self._elapsed = elapsed
        if stops > 0:
            self.cancel.cancel()

    def _average_statistics(self) -> None:
        # One all-reduce per epoch.  Batch norm synchronised at every step instead
        # (Keras' `synchronized=True`) costs 3 all-reduces per layer: it made a small
        # U-Net's step on loopback 70 ms slower, longer than the step itself.
        variables = [
            variable
            for variable in self.model.non_trainable_variables
            if "float" in str(variable.dtype)
        ]
        if not variables:
            return
        sizes = [math.prod(variable.shape) for variable in variables]
        local = tf.concat([tf.reshape(tf.convert_to_tensor(v), [-1]) for v in variables], 0)
        for variable, mean in zip(variables, tf.split(self._mean(local), sizes), strict=True):
            variable.assign(tf.reshape(mean, variable.shape))

    def _mean_over_workers(self, values: Any) -> Any:
        strategy = self._strategy
        mine = strategy.experimental_distribute_values_from_function(lambda _: values)
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, mine, axis=None)
        return total / strategy.num_replicas_in_sync


class WorkerSteps:
    """Training and validation steps of one worker among several, with their figures
    averaged over the workers.

    ``model.train_step`` and ``model.test_step`` (the model's own, as ``model.fit`` runs
    them) run as the strategy's replica functions, and their figures are averaged over
    the replicas of all workers.

    Parameters
    ----------
    model
        A compiled model built under a ``MultiWorkerMirroredStrategy``.
    """

    def __init__(self, model: Any) -> None:
        self._model = model
        self._strategy = model.distribute_strategy
        self._built = False
        self._train = tf.function(self._averaged(model.train_step), reduce_retracing=True)
        self._test = tf.function(self._averaged(model.test_step), reduce_retracing=True)

    def train(self, batch: tuple[Any, ...]) -> dict[str, float]:
        """One training step on this worker's ``(x, y[, sample_weight])``; returns the
        batch's loss and metrics, as ``train_on_batch`` does."""
        self._build(batch)
        self._model.reset_metrics()
        return _floats(self._train(tuple(batch)))

    def evaluate(self, batches: Iterable[tuple[Any, ...]], steps: int | None) -> dict[str, float]:
        """``model.evaluate``'s figures on ``batches`` (at most ``steps`` of them).

        Every worker evaluates every batch (validation sets are small), so ``batches``
        must be the same on all of them.
        """
        self._model.reset_metrics()
        logs: dict[str, Any] = {}
        for batch in itertools.islice(batches, steps):
            logs = self._test(tuple(batch))
        return _floats(logs)

    def _build(self, batch: tuple[Any, ...]) -> None:
        # The private API of the module docstring.
        if not self._built:
            self._model._maybe_symbolic_build(data_batch=tuple(batch))
            self._built = True

    def _averaged(self, step: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
        strategy = self._strategy

        def run(batch: Any) -> dict[str, Any]:
            logs = strategy.run(step, args=(batch,))
            # One all-reduce for all figures: each is one more round trip between nodes.
            stacked = strategy.run(_stack, args=tuple(logs.values()))
            means = strategy.reduce(tf.distribute.ReduceOp.MEAN, stacked, axis=None)
            return dict(zip(logs, tf.unstack(means), strict=True))

        return run


def _stack(*values: Any) -> Any:
    return tf.stack([tf.cast(value, tf.float32) for value in values])


def _floats(logs: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in logs.items()}
