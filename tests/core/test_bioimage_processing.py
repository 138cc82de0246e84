"""bioimage.io processing steps on numpy stacks, checked against bioimageio.core's own."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from napari_dlbio.core.bioimage_processing import (
    ProcessingStep,
    StepKind,
    apply_steps,
    output_probabilities,
)
from napari_dlbio.core.errors import ConfigError, InputDataError

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _stack(seed: int = 0, channels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 30.0, size=(1, 12, 10, channels)).astype(np.float32)


def _theirs(x: np.ndarray, descr: Any) -> np.ndarray:
    """What bioimageio.core 0.11 makes of one sample ``x`` (batch, y, x, channel)."""
    pytest.importorskip("bioimageio.core")
    from bioimageio.core.common import MemberId
    from bioimageio.core.sample import Sample
    from bioimageio.core.stat_calculators import compute_measures
    from bioimageio.core.tensor import Tensor

    member = MemberId("t")
    op = _operator(descr, member)
    sample = Sample(
        members={member: Tensor(x, dims=("batch", "y", "x", "channel"))}, stat={}, id="s"
    )
    sample.stat = compute_measures(op.required_measures, [sample])
    op(sample)
    return np.asarray(sample.members[member].data, dtype=np.float32)


def _operator(descr: Any, member: Any) -> Any:
    from bioimageio.core import proc_ops

    classes = {
        "scale_range": proc_ops.ScaleRange,
        "zero_mean_unit_variance": proc_ops.ZeroMeanUnitVariance,
        "fixed_zero_mean_unit_variance": proc_ops.FixedZeroMeanUnitVariance,
        "scale_linear": proc_ops.ScaleLinear,
        "clip": proc_ops.Clip,
        "sigmoid": proc_ops.Sigmoid,
        "binarize": proc_ops.Binarize,
    }
    return classes[descr.id].from_proc_descr(descr, member)


def _cases() -> list[tuple[Any, ProcessingStep]]:
    v0_5 = pytest.importorskip("bioimageio.spec.model.v0_5")
    yx = (v0_5.AxisId("y"), v0_5.AxisId("x"))
    return [
        (
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(axes=yx, min_percentile=2.0, max_percentile=98.0)
            ),
            ProcessingStep(
                kind=StepKind.SCALE_RANGE, axes=("y", "x"), min_percentile=2.0, max_percentile=98.0
            ),
        ),
        (
            v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(max_percentile=99.0)),
            ProcessingStep(kind=StepKind.SCALE_RANGE, max_percentile=99.0),
        ),
        (
            v0_5.ZeroMeanUnitVarianceDescr(
                kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=(*yx, v0_5.AxisId("channel")))
            ),
            ProcessingStep(kind=StepKind.ZERO_MEAN_UNIT_VARIANCE, axes=("y", "x", "channel")),
        ),
        (
            v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=yx)),
            ProcessingStep(kind=StepKind.ZERO_MEAN_UNIT_VARIANCE, axes=("y", "x")),
        ),
        (
            v0_5.ScaleLinearDescr(
                kwargs=v0_5.ScaleLinearAlongAxisKwargs(
                    axis=v0_5.AxisId("channel"), gain=[2.0, 0.5], offset=[1.0, -3.0]
                )
            ),
            ProcessingStep(kind=StepKind.SCALE_LINEAR, gain=(2.0, 0.5), offset=(1.0, -3.0)),
        ),
        (
            v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=0.01, offset=-0.2)),
            ProcessingStep(kind=StepKind.SCALE_LINEAR, gain=(0.01,), offset=(-0.2,)),
        ),
        (
            v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=20.0, max=90.0)),
            ProcessingStep(kind=StepKind.CLIP, min_value=20.0, max_value=90.0),
        ),
        (
            v0_5.ClipDescr(
                kwargs=v0_5.ClipKwargs(min_percentile=5.0, max_percentile=95.0, axes=yx)
            ),
            ProcessingStep(
                kind=StepKind.CLIP, axes=("y", "x"), min_percentile=5.0, max_percentile=95.0
            ),
        ),
        (
            v0_5.SigmoidDescr(),
            ProcessingStep(kind=StepKind.SIGMOID),
        ),
        (
            v0_5.BinarizeDescr(kwargs=v0_5.BinarizeKwargs(threshold=60.0)),
            ProcessingStep(kind=StepKind.BINARIZE, threshold=(60.0,)),
        ),
        (
            v0_5.FixedZeroMeanUnitVarianceDescr(
                kwargs=v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                    axis=v0_5.AxisId("channel"), mean=[50.0, 60.0], std=[10.0, 20.0]
                )
            ),
            ProcessingStep(
                kind=StepKind.FIXED_ZERO_MEAN_UNIT_VARIANCE, mean=(50.0, 60.0), std=(10.0, 20.0)
            ),
        ),
    ]


def test_every_step_matches_bioimageio_core() -> None:
    x = _stack()
    for descr, step in _cases():
        ours = apply_steps(x, [step])
        theirs = _theirs(x, descr)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5, err_msg=descr.id)


def test_statistics_are_per_slice() -> None:
    two = np.concatenate([_stack(1), 10 * _stack(2)])
    step = ProcessingStep(kind=StepKind.ZERO_MEAN_UNIT_VARIANCE, axes=("batch", "y", "x"))
    together = apply_steps(two, [step])
    np.testing.assert_allclose(together[1:], apply_steps(two[1:], [step]), rtol=1e-6)


def test_steps_round_trip_through_json() -> None:
    step = ProcessingStep(kind=StepKind.CLIP, axes=("y", "x"), min_percentile=1.0)
    assert ProcessingStep.from_json(step.to_json()) == step
    with pytest.raises(ConfigError, match="Unknown axes"):
        ProcessingStep(kind=StepKind.CLIP, axes=("z",), min_value=0.0)
    with pytest.raises(ConfigError, match="lower or an upper"):
        ProcessingStep(kind=StepKind.CLIP)


def test_per_channel_values_must_fit_the_channels() -> None:
    step = ProcessingStep(kind=StepKind.SCALE_LINEAR, gain=(1.0, 2.0, 3.0))
    with pytest.raises(InputDataError, match="3 values of gain"):
        apply_steps(_stack(channels=2), [step])


def test_one_channel_output_becomes_two_class_probabilities() -> None:
    raw = np.zeros((4, 4, 2), np.float32)
    raw[..., 1] = np.linspace(0, 1, 16).reshape(4, 4)
    raw[..., 0] = 1 - raw[..., 1]
    binarize = ProcessingStep(kind=StepKind.BINARIZE, threshold=(0.3,))
    probabilities = output_probabilities(raw, [binarize], one_channel=True)
    assert probabilities.shape == (4, 4, 2)
    np.testing.assert_array_equal(probabilities[..., 1], raw[..., 1] > 0.3)
    np.testing.assert_array_equal(probabilities.sum(-1), 1)
    assert output_probabilities(raw, [], one_channel=True) is not None
