"""Import a bioimage.io model package (a zip) whose weights Keras can load in safe mode.

:func:`load_bioimageio_package` gives a :class:`~napari_dlbio.models.store.ModelFolder`
that predicts, fine-tunes and saves like any other model.  What it accepts, and why:

- **Format 0.5** (``bioimageio.spec``'s current one); other versions are refused with their
  version named, before anything else is read.
- **Weights** ``keras_v3`` (preferred) or ``keras_hdf5``, loaded with Keras safe mode on
  through :func:`~napari_dlbio.models.store.load_keras_file`.  PyTorch, TorchScript, ONNX,
  TensorFlow.js and SavedModel-only packages are refused, naming the formats they have
  (a SavedModel cannot be loaded as a Keras network in safe mode, nor fine-tuned).
- **Packages napari-dlbio wrote** carry its whole model config under
  ``config.napari_dlbio``: the import is lossless (same normalisation, tiles, classes).
- **Other packages**: a segmentation network with one input and one output, both
  (batch, y, x, channel), input sides of a power-of-two step or fixed power-of-two size.
  Its pre-processing replaces the percentile normalisation and its post-processing turns
  the output into class probabilities (``SegmentationConfig.input_processing`` /
  ``output_processing``, applied by :mod:`napari_dlbio.core.bioimage_processing`).
  Classes are the output's channel names; an output of K >= 2 channels is read as K
  classes, channel 0 the background (the most probable one wins); a single channel as
  the probability of its one named structure against the background (the mask is where
  it is above 0.5 after post-processing, so ``binarize`` sets the threshold).
- **Nothing of the package runs as code**: ``custom`` processing steps are refused, and
  so are steps napari-dlbio cannot apply (naming them).
- **The test tensors must reproduce**: the package's pre-processing, network and
  post-processing are run on its test input and compared with its test output at
  bioimage.io's default tolerance (1e-3 relative and absolute, 100 elements per million).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio.core.bioimage_processing import ProcessingStep, StepKind, apply_steps
from napari_dlbio.core.bioimageio_rdf import package_task, read_package_rdf
from napari_dlbio.core.bioimageio_text import one_line
from napari_dlbio.core.config import JsonConfig, Task
from napari_dlbio.core.errors import ConfigError, DlbioError, ModelFolderError
from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig
from napari_dlbio.models.store import ModelFolder, config_class, load_keras_file

KERAS_FORMATS = ("keras_v3", "keras_hdf5")
_SUFFIX = {"keras_v3": ".keras", "keras_hdf5": ".h5"}
RELATIVE_TOLERANCE = 1e-3
ABSOLUTE_TOLERANCE = 1e-3
MISMATCHED_PER_MILLION = 100
# Default prediction tile and training patch sides for packages of other tools.
TILE_SIDE = 512
PATCH_SIDE = 256


def load_bioimageio_package(path: str | Path, task: Task | None = None) -> ModelFolder:
    """Load a bioimage.io model package with Keras weights as a model.

    Parameters
    ----------
    path
        The package (``.zip``).
    task
        If given, refuse a model made for another task.

    Raises
    ------
    ModelFolderError
        The package is damaged, of another format version, has no Keras weights, asks
        for code to run or for processing napari-dlbio cannot apply, is made for another
        task, or its test tensors do not reproduce.
    DlbioError
        ``bioimageio.spec`` is not installed.
    """
    path = Path(path)
    rdf = read_package_rdf(path, check_members=True)
    found_task = package_task(rdf)
    if task is not None and found_task is not task:
        raise ModelFolderError(
            f"{path} holds a {found_task.value} model, but a {task.value} model is needed here."
        )
    descr = _description(path)
    pre, post = _processing(descr, path)
    weights_format, member = _keras_weights(descr, path)
    with tempfile.TemporaryDirectory(prefix="dlbio-package-") as tmp:
        weights = Path(tmp) / f"weights{_SUFFIX[weights_format]}"
        with zipfile.ZipFile(path) as archive:
            weights.write_bytes(archive.read(member))
        network = load_keras_file(weights)
    recorded = (rdf.get("config") or {}).get("napari_dlbio")
    if recorded is not None:
        config = _recorded_config(recorded, found_task, path)
    elif found_task is Task.SEGMENTATION:
        config = _segmentation_config(descr, network, pre, post, path)
    else:
        raise ModelFolderError(
            f"{path} is an image classifier written by another tool; napari-dlbio imports "
            "segmentation packages of other tools and its own classifiers only."
        )
    _check_test_tensors(descr, network, pre, post, path)
    return ModelFolder(model=network, task=found_task, config=config, path=path)


def _description(path: Path) -> Any:
    try:
        from bioimageio.spec import InvalidDescr, load_description
    except ImportError:
        raise DlbioError(
            "Reading bioimage.io packages needs the bioimageio packages: "
            'pip install "napari-dlbio[bioimageio]".'
        ) from None
    descr = load_description(path, format_version="discover", perform_io_checks=False)
    if isinstance(descr, InvalidDescr):
        errors = descr.validation_summary.errors
        first = f"{'.'.join(map(str, errors[0].loc))}: {errors[0].msg}" if errors else ""
        raise ModelFolderError(f"{path} is not a valid bioimage.io model: {one_line(first)}")
    return descr


def _keras_weights(descr: Any, path: Path) -> tuple[str, str]:
    """The Keras weights entry to load and its member of the zip."""
    present = [name for name, entry in descr.weights if entry is not None]
    for name in KERAS_FORMATS:
        entry = getattr(descr.weights, name, None)
        if entry is None:
            continue
        source = entry.source
        if not hasattr(source, "path") or "://" in str(source):
            raise ModelFolderError(
                f"{path} names its {name} weights at {source}, outside the package; "
                "napari-dlbio opens only self-contained packages."
            )
        return name, str(source)
    raise ModelFolderError(
        f"{path} has weights in {', '.join(present)} only; napari-dlbio runs Keras weights "
        f"({' or '.join(KERAS_FORMATS)}). Use the package's Keras version, or another tool "
        "for these weights."
    )


def _processing(descr: Any, path: Path) -> tuple[tuple[ProcessingStep, ...], ...]:
    """The input's pre-processing and the output's post-processing, as napari-dlbio steps."""
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise ModelFolderError(
            f"{path} has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs; "
            "napari-dlbio runs models of one input image and one output."
        )
    tensors = (descr.inputs[0], descr.outputs[0])
    steps = []
    for tensor, field in zip(tensors, ("preprocessing", "postprocessing"), strict=True):
        axes = _axis_names(tensor, path)
        steps.append(tuple(_step(item, axes, tensor.id, path) for item in getattr(tensor, field)))
    return steps[0], steps[1]


def _axis_names(tensor: Any, path: Path) -> dict[str, str]:
    """Map the tensor's axis ids to batch / y / x / channel, refusing other layouts."""
    kinds = [axis.type for axis in tensor.axes]
    if kinds == ["batch", "channel"]:
        ids = [str(axis.id) for axis in tensor.axes]
        return dict(zip(ids, ("batch", "channel"), strict=True))
    if kinds != ["batch", "space", "space", "channel"]:
        raise ModelFolderError(
            f"{path}: tensor {tensor.id} has axes ({', '.join(kinds)}); napari-dlbio runs "
            "Keras models on (batch, y, x, channel) images."
        )
    ids = [str(axis.id) for axis in tensor.axes]
    return dict(zip(ids, ("batch", "y", "x", "channel"), strict=True))


def _step(item: Any, axes: dict[str, str], tensor_id: Any, path: Path) -> ProcessingStep:
    kind_id = str(getattr(item, "id", type(item).__name__))
    if kind_id == "custom" or type(item).__name__ == "CustomProcessingDescr":
        raise ModelFolderError(
            f"{path} asks to run code of its own to process tensor {tensor_id}; napari-dlbio "
            "never runs code from a model package."
        )
    try:
        kind = StepKind(kind_id)
    except ValueError:
        known = ", ".join(step.value for step in StepKind)
        raise ModelFolderError(
            f"{path}: tensor {tensor_id} needs the processing step {kind_id!r}, which "
            f"napari-dlbio cannot apply (it applies {known})."
        ) from None
    kwargs = getattr(item, "kwargs", None)
    fields: dict[str, Any] = {}
    if kwargs is not None:
        fields = _step_fields(kind, kwargs, axes, tensor_id, path)
    try:
        return ProcessingStep(kind=kind, **fields)
    except ConfigError as error:
        raise ModelFolderError(f"{path}: tensor {tensor_id}: {error}") from None


def _step_fields(
    kind: StepKind, kwargs: Any, axes: dict[str, str], tensor_id: Any, path: Path
) -> dict[str, Any]:
    def axis_name(axis: Any) -> str:
        name = axes.get(str(axis))
        if name is None:
            raise ModelFolderError(f"{path}: tensor {tensor_id} has no axis {axis}.")
        return name

    along = getattr(kwargs, "axis", None)
    if along is not None and axis_name(along) != "channel":
        raise ModelFolderError(
            f"{path}: tensor {tensor_id}'s {kind.value} step works along axis {along}; "
            "napari-dlbio applies per-axis values along the channels only."
        )
    reference = getattr(kwargs, "reference_tensor", None)
    if reference is not None and str(reference) != str(tensor_id):
        raise ModelFolderError(
            f"{path}: tensor {tensor_id}'s {kind.value} step takes its statistics from "
            f"tensor {reference}; napari-dlbio computes them on the tensor itself."
        )
    fields: dict[str, Any] = {}
    if getattr(kwargs, "axes", None) is not None:
        fields["axes"] = tuple(axis_name(axis) for axis in kwargs.axes)
    for ours, theirs in (
        ("min_percentile", "min_percentile"),
        ("max_percentile", "max_percentile"),
        ("eps", "eps"),
        ("dtype", "dtype"),
    ):
        if getattr(kwargs, theirs, None) is not None:
            fields[ours] = getattr(kwargs, theirs)
    if kind is StepKind.CLIP:
        fields["min_value"], fields["max_value"] = kwargs.min, kwargs.max
    for name in ("gain", "offset", "mean", "std", "threshold"):
        value = getattr(kwargs, name, None)
        if value is not None:
            fields[name] = tuple(float(v) for v in np.atleast_1d(value))
    return fields


def _recorded_config(recorded: Any, task: Task, path: Path) -> JsonConfig:
    """The model config napari-dlbio stored in its own package."""
    if not isinstance(recorded, dict):
        raise ModelFolderError(f"{path}: config.napari_dlbio must be a mapping.")
    try:
        return config_class(task).from_dict(recorded.get("config"))
    except ConfigError as error:
        raise ModelFolderError(f"{path}: config.napari_dlbio: {error}") from None


def _segmentation_config(
    descr: Any,
    network: Any,
    pre: tuple[ProcessingStep, ...],
    post: tuple[ProcessingStep, ...],
    path: Path,
) -> SegmentationConfig:
    """A config for a segmentation package of another tool (see the module notes)."""
    tensor_in, tensor_out = descr.inputs[0], descr.outputs[0]
    size = tensor_in.axes[1].size
    if isinstance(size, int):
        multiple, smallest, fixed = size, size, True
    elif hasattr(size, "step"):
        multiple, smallest, fixed = max(int(size.step), 2), int(size.min), False
    else:
        multiple, smallest, fixed = 0, 0, False
    if not _power_of_two(multiple) or multiple > 1024 or smallest % multiple:
        raise ModelFolderError(
            f"{path}: its input's sides must be {size}; napari-dlbio tiles images whose "
            "sides are a fixed power of two, or any multiple of a power of two."
        )
    tile = multiple if fixed else _round_up(max(TILE_SIDE, smallest), multiple)
    patch = multiple if fixed else _round_up(max(PATCH_SIDE, smallest), multiple)
    channels = len(tensor_in.axes[-1].channel_names)
    names = [str(name) for name in tensor_out.axes[-1].channel_names]
    outputs = int(network.output.shape[-1])
    if len(names) != outputs:
        names = [f"class {k}" for k in range(outputs)]
    if outputs == 1:
        names = ["background", names[0] if names[0] != "background" else "foreground"]
    if len(set(names)) != len(names) or not all(name.strip() for name in names):
        names = [f"class {k}" for k in range(len(names))]
    try:
        return SegmentationConfig(
            class_names=tuple(names),
            input_channels=channels,
            network=_size_network(multiple),
            patch_size=min(patch, 2048),
            tile_size=tile,
            tile_overlap=min(32, tile // 4),
            input_processing=pre,
            output_processing=post,
        )
    except ConfigError as error:
        raise ModelFolderError(f"{path}: cannot use this package: {error}") from None


def _power_of_two(value: int) -> bool:
    return value >= 2 and value & (value - 1) == 0


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _size_network(multiple: int) -> UNetConfig:
    """A U-Net config whose size multiple is ``multiple``: only its sides are used."""
    depth = min(multiple.bit_length() - 1, 8)
    return UNetConfig(depth=depth, stem_stride=multiple >> depth, base_filters=1, batch_norm=False)


def _check_test_tensors(
    descr: Any,
    network: Any,
    pre: tuple[ProcessingStep, ...],
    post: tuple[ProcessingStep, ...],
    path: Path,
) -> None:
    """Refuse a package whose network, as napari-dlbio runs it, misses its test output."""
    from bioimageio.spec.utils import load_array

    try:
        test_input = np.asarray(load_array(descr.inputs[0].test_tensor))
        expected = np.asarray(load_array(descr.outputs[0].test_tensor), dtype=np.float32)
    except (OSError, ValueError, KeyError) as error:
        raise ModelFolderError(f"{path}: its test tensors cannot be read: {error}") from None
    prepared = _apply_any(test_input, pre)
    try:
        output = np.asarray(network(prepared, training=False), dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise ModelFolderError(
            f"{path}: its network does not run on its own test input: {one_line(error)}"
        ) from None
    output = _apply_any(output, post)
    if output.shape != expected.shape:
        raise ModelFolderError(
            f"{path}: its network gives an output of shape {output.shape} on its test input, "
            f"but its test output has shape {expected.shape}."
        )
    off = np.abs(output - expected) > ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * np.abs(expected)
    if off.sum() > MISMATCHED_PER_MILLION * off.size / 1e6:
        worst = float(np.abs(output - expected).max())
        raise ModelFolderError(
            f"{path}: its test output is not reproduced: {int(off.sum())} of {off.size} "
            f"values differ (by up to {worst:.3g}). The package's network, processing or "
            "test tensors do not belong together; napari-dlbio does not use it."
        )


def _apply_any(tensor: np.ndarray, steps: tuple[ProcessingStep, ...]) -> np.ndarray:
    """Apply steps to a (batch, y, x, channel) or (batch, channel) tensor."""
    if tensor.ndim == 4:
        return apply_steps(tensor, steps)
    return apply_steps(tensor[:, None, None], steps)[:, 0, 0]
