"""The pre- and post-processing steps of a bioimage.io model, applied to numpy stacks.

A model imported from a bioimage.io package written by another tool carries its steps
(``rdf.yaml``'s ``preprocessing`` / ``postprocessing``) as :class:`ProcessingStep` configs;
:func:`apply_steps` runs them as ``bioimageio.core`` 0.11 does (its ``proc_ops``): the same
formulas, epsilons and percentile methods.

Arrays are (Z, Y, X, C) stacks whose axes the steps name ``batch``, ``y``, ``x`` and
``channel``.  Statistics (percentiles, mean, standard deviation) are always those of one
slice: a slice is one bioimage.io sample.  ``batch`` among a step's ``axes`` (or no ``axes``,
which means all axes) asks for statistics over a data set; they are taken from the slice
itself, which is what ``bioimageio.core`` computes when it predicts one image, and what keeps
training and prediction alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from enum import Enum

import numpy as np

from napari_dlbio.core.config import JsonConfig, check
from napari_dlbio.core.errors import InputDataError

#: Where each named axis lies in a (Z, Y, X, C) stack.
AXIS_INDEX = {"batch": 0, "y": 1, "x": 2, "channel": 3}
DTYPES = (
    "float32",
    "float64",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "bool",
)


class StepKind(Enum):
    """A processing step; the values are bioimage.io's ``id``s."""

    SCALE_RANGE = "scale_range"
    ZERO_MEAN_UNIT_VARIANCE = "zero_mean_unit_variance"
    FIXED_ZERO_MEAN_UNIT_VARIANCE = "fixed_zero_mean_unit_variance"
    SCALE_LINEAR = "scale_linear"
    CLIP = "clip"
    SIGMOID = "sigmoid"
    SOFTMAX = "softmax"
    BINARIZE = "binarize"
    ENSURE_DTYPE = "ensure_dtype"


@dataclasses.dataclass(frozen=True)
class ProcessingStep(JsonConfig):
    """One bioimage.io processing step.

    Attributes
    ----------
    kind
        What the step does.
    axes
        Axes reduced together for the statistics (``None``: all); see the module notes.
    min_percentile, max_percentile
        ``scale_range``'s percentiles (mapped to 0 and 1), or ``clip``'s.
    min_value, max_value
        ``clip``'s fixed bounds.
    gain, offset
        ``scale_linear``: ``x * gain + offset``, one value or one per channel.
    mean, std
        ``fixed_zero_mean_unit_variance``: one value or one per channel.
    threshold
        ``binarize``: 1 where ``x > threshold``, one value or one per channel.
    eps
        Added to the divisor of ``scale_range`` and the zero-mean steps.
    dtype
        ``ensure_dtype``'s type.
    """

    kind: StepKind
    axes: tuple[str, ...] | None = None
    min_percentile: float | None = None
    max_percentile: float | None = None
    min_value: float | None = None
    max_value: float | None = None
    gain: tuple[float, ...] = (1.0,)
    offset: tuple[float, ...] = (0.0,)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    threshold: tuple[float, ...] = (0.5,)
    eps: float = 1e-6
    dtype: str = "float32"

    def validate(self) -> None:
        """Reject steps that cannot be applied."""
        unknown = [axis for axis in self.axes or () if axis not in AXIS_INDEX]
        check(not unknown, f"Unknown axes {unknown} in a {self.kind.value} step.")
        for name in ("min_percentile", "max_percentile"):
            value = getattr(self, name)
            check(
                value is None or 0.0 <= value <= 100.0,
                f"{self.kind.value}: {name} must be between 0 and 100, not {value}.",
            )
        if self.kind is StepKind.SCALE_RANGE:
            low, high = self.min_percentile or 0.0, self.max_percentile
            check(
                low < (100.0 if high is None else high),
                f"scale_range needs min_percentile < max_percentile, not {low} and {high}.",
            )
        if self.kind is StepKind.CLIP:
            check(
                any(
                    value is not None
                    for value in (
                        self.min_value,
                        self.max_value,
                        self.min_percentile,
                        self.max_percentile,
                    )
                ),
                "clip needs a lower or an upper bound.",
            )
        for name in ("gain", "offset", "mean", "std", "threshold"):
            check(len(getattr(self, name)) >= 1, f"{self.kind.value}: {name} is empty.")
        check(0.0 < self.eps <= 0.1, f"{self.kind.value}: eps must be in (0, 0.1].")
        check(self.dtype in DTYPES, f"ensure_dtype: unknown type {self.dtype!r}.")


def apply_steps(stack: np.ndarray, steps: Sequence[ProcessingStep]) -> np.ndarray:
    """Apply processing steps, in order, to a (Z, Y, X, C) stack.

    Parameters
    ----------
    stack
        (Z, Y, X, C) of any real dtype.
    steps
        The steps, as the package lists them.

    Returns
    -------
    np.ndarray
        float32 (Z, Y, X, C).

    Raises
    ------
    InputDataError
        For a stack that is not 4D, or per-channel values that do not fit its channels.
    """
    values = np.asarray(stack)
    if values.ndim != 4:
        raise InputDataError(f"Expected a (Z, Y, X, C) stack, got shape {values.shape}.")
    if values.dtype == bool:
        values = values.astype(np.uint8)
    for step in steps:
        values = _apply(values, step)
    return np.asarray(values, dtype=np.float32)


def _apply(x: np.ndarray, step: ProcessingStep) -> np.ndarray:
    kind = step.kind
    if kind is StepKind.ENSURE_DTYPE:
        return x.astype(step.dtype)
    if kind is StepKind.SIGMOID:
        return 1.0 / (1.0 + np.exp(-x))
    if kind is StepKind.SOFTMAX:
        shifted = np.exp(x - x.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    if kind is StepKind.BINARIZE:
        return x > _per_channel(step.threshold, x, "threshold")
    if kind is StepKind.SCALE_LINEAR:
        return x * _per_channel(step.gain, x, "gain") + _per_channel(step.offset, x, "offset")
    if kind is StepKind.FIXED_ZERO_MEAN_UNIT_VARIANCE:
        mean = _per_channel(step.mean, x, "mean")
        return (x - mean) / (_per_channel(step.std, x, "std") + step.eps)
    reduce = _reduced_axes(step.axes)
    if kind is StepKind.ZERO_MEAN_UNIT_VARIANCE:
        mean = x.mean(axis=reduce, keepdims=True, dtype=np.float64)
        std = np.sqrt(((x - mean) ** 2).mean(axis=reduce, keepdims=True))
        return (x - mean) / (std + step.eps)
    if kind is StepKind.SCALE_RANGE:
        low = step.min_percentile or 0.0
        high = 100.0 if step.max_percentile is None else step.max_percentile
        lower, upper = np.percentile(x, [low, high], axis=reduce, keepdims=True)
        return (x - lower) / (upper - lower + step.eps)
    return _clip(x, step, reduce)


def _clip(x: np.ndarray, step: ProcessingStep, reduce: tuple[int, ...]) -> np.ndarray:
    # bioimageio.core: percentiles of one sample by the inverted CDF, of a data set (no
    # axes, or batch among them) as the mean of per-sample linear estimates.
    per_sample = step.axes is not None and "batch" not in step.axes
    method = "inverted_cdf" if per_sample else "linear"
    lower: float | np.ndarray | None = step.min_value
    upper: float | np.ndarray | None = step.max_value
    if step.min_percentile is not None:
        lower = np.percentile(x, step.min_percentile, axis=reduce, keepdims=True, method=method)
    if step.max_percentile is not None:
        upper = np.percentile(x, step.max_percentile, axis=reduce, keepdims=True, method=method)
    if lower is not None:
        x = np.maximum(x, lower)
    if upper is not None:
        x = np.minimum(x, upper)
    return x


def _reduced_axes(axes: tuple[str, ...] | None) -> tuple[int, ...]:
    """Stack axes to reduce: never the slice axis (statistics are per slice)."""
    names = ("y", "x", "channel") if axes is None else axes
    return tuple(sorted(AXIS_INDEX[name] for name in names if name != "batch"))


def _per_channel(values: tuple[float, ...], x: np.ndarray, name: str) -> np.ndarray:
    if len(values) not in (1, x.shape[-1]):
        raise InputDataError(
            f"The model gives {len(values)} values of {name}, one per channel, but the "
            f"image has {x.shape[-1]} channels."
        )
    return np.asarray(values, dtype=np.float32)


def output_probabilities(
    raw: np.ndarray, steps: Sequence[ProcessingStep], one_channel: bool
) -> np.ndarray:
    """Class probabilities from a network output and the package's post-processing.

    Parameters
    ----------
    raw
        (..., Y, X, K) network output; for a one-channel network, the (..., Y, X, 2)
        ``[1 - y, y]`` the prediction step makes of it.
    steps
        The package's post-processing.
    one_channel
        Whether the network has one output channel: after post-processing it is the
        probability of the one structure, and ``1 - value`` that of the background.
    """
    values = np.asarray(raw, dtype=np.float32)
    if not steps:
        return values
    if one_channel:
        values = values[..., 1:]
    shape = values.shape
    flat = values.reshape(-1, *shape[-3:])
    processed = apply_steps(flat, steps).reshape(shape)
    if one_channel:
        return np.concatenate([1.0 - processed, processed], axis=-1)
    return processed
