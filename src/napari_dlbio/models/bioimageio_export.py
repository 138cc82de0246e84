"""Export a model folder as a bioimage.io model package that the rest of the field can run.

The package (one zip: ``rdf.yaml`` and every file it names) is described with
``bioimageio.spec``'s own Python API at its current model format (0.5.x) and written by its
``save_bioimageio_package``; ``bioimageio test PACKAGE.zip`` (``bioimageio.core``) runs it.

What the description says, and why:

- **U-Net** (segmentation): input ``image`` (batch, y, x, channel) whose sides are any
  multiple of the network's size multiple (``ParameterizedSize``); pre-processing
  ``scale_range`` over y and x per sample with the model's percentiles
  (``normalise_low`` / ``normalise_high``), as :func:`~napari_dlbio.core.normalisation.\
normalise_percentile` does slice by slice and channel by channel.  Output ``probabilities``:
  the network's own sigmoid (one foreground channel) or softmax (one channel per class), so no
  post-processing; the mask is the most probable class (> 0.5 for one channel).  No halo is
  declared: ``bioimageio.core`` pads a whole image by the halo before normalising it, which
  changed 0.4 % of the mask of an ISBI slice (a halo of 16, half the tile overlap); without
  one, an image up to the model's tile size is one network pass, as napari-dlbio predicts it.
- **Classifier**: input ``image`` of the model's fixed size with values 0-255 (photos are
  resized to it first, as napari-dlbio does; the format has no resizing step); the
  normalisation is a layer of the network, so no pre-processing.  Output
  ``class_probabilities``, the network's softmax.  napari-dlbio's test-time augmentation
  (the mean of 8 orientations) cannot be described, so the package gives one network pass.

Two differences from napari-dlbio's own prediction, on inputs the test data never meets:
napari-dlbio estimates the percentiles of a slice of more than about a million pixels on a
strided subsample, and scales a slice whose two percentiles are equal by its minimum and
maximum (``scale_range`` divides by a tiny epsilon instead).

The parts come from modules with one job each: the test image from ``bioimageio_samples``,
the cover from ``bioimageio_cover``, the words from ``bioimageio_text`` (all in ``core``), the
tensors with their test files and the weights (``keras_v3``, ``keras_hdf5``,
``tensorflow_saved_model_bundle``) from :mod:`napari_dlbio.models.bioimageio_files`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio.core.bioimageio_cover import (
    display_image,
    heat_overlay,
    mask_overlay,
    write_cover,
)
from napari_dlbio.core.bioimageio_samples import classifier_sample, segmentation_sample
from napari_dlbio.core.bioimageio_text import (
    DEFAULT_LICENCE,
    builtin_licence,
    builtin_tags,
    card_citations,
    card_text,
    classifier_notes,
    default_authors,
    documentation_text,
    one_line,
    safe_name,
    segmentation_notes,
    summary_text,
)
from napari_dlbio.core.builtin_models import (
    CARD_FILE,
    builtin_name,
    model_label,
    refuse_builtin_destination,
)
from napari_dlbio.core.class_dataset import to_input_image
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import DlbioError, InputDataError, ModelFolderError
from napari_dlbio.core.io import atomic_file, refuse_existing_file
from napari_dlbio.core.masks import mask_from_probabilities
from napari_dlbio.core.normalisation import normalise_percentile
from napari_dlbio.core.photo import to_channels, to_uint8
from napari_dlbio.models.bioimageio_files import (
    describe_image_input,
    describe_probabilities,
    write_weights,
)
from napari_dlbio.models.gradcam import grad_cam
from napari_dlbio.models.store import ModelFolder, load_model_folder


@dataclass
class _Parts:
    """What the task-specific half of an export contributes to the description."""

    inputs: list[Any]
    outputs: list[Any]
    notes: list[str]
    tags: list[str]


def export_bioimageio(
    model_ref: str | Path | ModelFolder,
    out_zip: str | Path,
    *,
    sample: np.ndarray | None = None,
    licence: str | None = None,
    authors: Sequence[str] = (),
) -> Path:
    """Write a model folder as a bioimage.io model package (a zip) and return its path.

    Parameters
    ----------
    model_ref
        A model folder, ``builtin:NAME``, or a model already loaded (or just trained).
    out_zip
        The package to write, ending in ``.zip``; an existing file is never overwritten.
    sample
        An image like those the model is meant for (``(Y, X)``, ``(Y, X, C)`` or a stack,
        whose first slice is used), from which the test input and output and the cover are
        made; a U-Net's is cut to at most 512 x 512 pixels.  Default, an image that ships
        with napari-dlbio: for grey models section 0 of the ISBI 2012 EM training volume
        (the built-in EM models trained on every labelled section, so none is held out),
        for colour models the first PlantVillage photo that a classifier's record does not
        list among its training images.  Pass an image of your own data for other models.
    licence
        SPDX identifier of the package's licence.  A built-in model's is set by its training
        data's terms (``CC-BY-NC-4.0`` for the ISBI 2012 EM models, ``CC-BY-SA-3.0`` for
        ``plantvillage-15``) and cannot be changed.  For your own models the default is
        :data:`DEFAULT_LICENCE` (``CC-BY-4.0``); choose one that the terms of your training
        data allow (non-commercial data: ``CC-BY-NC-4.0``).
    authors
        Names of the people who made the model; default "napari-dlbio developers" for
        built-in models and "Anonymous" for others.

    Returns
    -------
    pathlib.Path
        ``out_zip``.

    Raises
    ------
    DlbioError
        ``bioimageio.spec`` is not installed (``pip install "napari-dlbio[bioimageio]"``).
    ModelFolderError
        The model cannot be loaded, a built-in model is given another licence, or
        ``out_zip`` lies among the built-in models.
    InputDataError
        The sample does not fit the model, the licence is no SPDX identifier, or the
        package would not be valid.
    OutputExistsError
        ``out_zip`` exists.
    """
    out_zip = Path(out_zip)
    if out_zip.suffix.lower() != ".zip":
        raise InputDataError(f"{out_zip}: a bioimage.io package is a .zip file; name it so.")
    refuse_existing_file(out_zip)
    refuse_builtin_destination(out_zip)
    spec = _spec_api()
    model = model_ref if isinstance(model_ref, ModelFolder) else load_model_folder(model_ref)
    if getattr(model.config, "packaged_network", False):
        raise ModelFolderError(
            f"{model_label(model.path)} came from someone else's bioimage.io package, whose "
            "network and processing napari-dlbio does not describe again; share that package "
            "itself, or a model trained here."
        )
    name = builtin_name(model.path)
    licence = _licence(spec, name, licence)
    authors = list(authors) or default_authors(name)
    with tempfile.TemporaryDirectory(prefix="dlbio-bioimageio-") as tmp:
        folder = Path(tmp)
        if model.task is Task.SEGMENTATION:
            parts = _segmentation_parts(spec, model, sample, folder)
        else:
            parts = _classifier_parts(spec, model, sample, folder)
        card = card_text(model.path, name, model.task, model.config)
        descr = _model_description(spec, model, name, card, parts, folder, licence, authors)
        with atomic_file(out_zip) as partial:
            built = folder / "package.zip"
            _save_package(descr, built)
            shutil.move(built, partial)
    return out_zip


def _spec_api() -> Any:
    """bioimageio.spec's model format 0.5 module, or a message saying how to install it."""
    try:
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise DlbioError(
            "Exporting to bioimage.io needs the bioimageio packages: "
            'pip install "napari-dlbio[bioimageio]".'
        ) from None
    return v0_5


def _licence(spec: Any, name: str | None, licence: str | None) -> str:
    if name is not None:
        return builtin_licence(name, licence)
    licence = licence or DEFAULT_LICENCE
    try:
        spec.LicenseId(licence)
    except ValueError:
        raise InputDataError(
            f"{licence!r} is not an SPDX licence identifier (https://spdx.org/licenses/), "
            f"such as {DEFAULT_LICENCE}, CC-BY-NC-4.0 or MIT."
        ) from None
    return licence


def _segmentation_parts(
    spec: Any, model: ModelFolder, sample: np.ndarray | None, folder: Path
) -> _Parts:
    config = model.config
    multiple = config.network.size_multiple
    image, source = segmentation_sample(sample, config.input_channels, multiple)
    normalised = normalise_percentile(
        image[np.newaxis], config.normalise_low, config.normalise_high
    )
    output = np.asarray(model.model(normalised, training=False), dtype=np.float32)
    sigmoid = output.shape[-1] == 1
    probabilities = np.concatenate([1 - output, output], -1) if sigmoid else output
    mask = mask_from_probabilities(probabilities[0], config.min_region_pixels)
    write_cover(
        folder / "cover.png", display_image(normalised[0]), mask_overlay(normalised[0], mask)
    )
    size = spec.ParameterizedSize(min=multiple, step=multiple)
    scale_range = spec.ScaleRangeDescr(
        kwargs=spec.ScaleRangeKwargs(
            axes=(spec.AxisId("y"), spec.AxisId("x")),
            min_percentile=config.normalise_low,
            max_percentile=_upper_percentile(config.normalise_high),
        )
    )
    image_input = describe_image_input(
        spec,
        folder,
        image[np.newaxis].astype(np.float32),
        size,
        description=f"Image; sides a multiple of {multiple} pixels.",
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            scale_range,
            spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32")),
        ],
    )
    names = [config.class_names[1]] if sigmoid else list(config.class_names)
    axes = [
        spec.SpaceOutputAxis(
            id=spec.AxisId(axis),
            size=spec.SizeReference(tensor_id=spec.TensorId("image"), axis_id=spec.AxisId(axis)),
        )
        for axis in ("y", "x")
    ]
    probabilities_output = describe_probabilities(
        spec,
        folder,
        output,
        "probabilities",
        f"Probability of {names[0]} per pixel."
        if sigmoid
        else "Probability of each class per pixel (softmax).",
        axes=[spec.BatchAxis(), *axes, spec.ChannelAxis(channel_names=names)],
    )
    notes = segmentation_notes(config, source, image.shape, sigmoid)
    tags = ["unet", "semantic-segmentation"]
    return _Parts(inputs=[image_input], outputs=[probabilities_output], notes=notes, tags=tags)


def _upper_percentile(high: float) -> float:
    if high <= 1:
        raise InputDataError(
            f"bioimage.io describes an upper percentile above 1 only; this model's is {high}."
        )
    return high


def _classifier_parts(
    spec: Any, model: ModelFolder, sample: np.ndarray | None, folder: Path
) -> _Parts:
    config = model.config
    size, channels = config.input_size, config.input_channels
    trained = set(model.metrics.get("training_images", ()))
    photo, source = classifier_sample(sample, channels, size, trained)
    test_input = to_input_image(photo, size, channels)[np.newaxis].astype(np.float32)
    output = np.asarray(model.model(test_input, training=False), dtype=np.float32)
    shown = to_channels(to_uint8(photo), 3)
    cam = grad_cam(model, photo, int(output[0].argmax()))
    write_cover(folder / "cover.png", shown, heat_overlay(shown, cam))
    names = list(config.class_names)
    if len(names) != output.shape[-1]:
        names = [f"class {i}" for i in range(output.shape[-1])]
    image_input = describe_image_input(
        spec,
        folder,
        test_input,
        size,
        description=f"Photo resized to {size} x {size} pixels, values 0-255.",
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 255.0)),
    )
    probabilities_output = describe_probabilities(
        spec,
        folder,
        output,
        "class_probabilities",
        "Probability of each class (softmax).",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=names)],
    )
    notes = classifier_notes(config, source)
    tags = ["image-classification"]
    return _Parts(inputs=[image_input], outputs=[probabilities_output], notes=notes, tags=tags)


def _model_description(
    spec: Any,
    model: ModelFolder,
    name: str | None,
    card: str,
    parts: _Parts,
    folder: Path,
    licence: str,
    authors: list[str],
) -> Any:
    documentation = folder / CARD_FILE
    documentation.write_text(documentation_text(card, parts.notes, model.metrics), encoding="utf-8")
    title = name or (model.path.name if model.path is not None else "model")
    summary = summary_text(name, model.task, model.config.class_names)
    try:
        return spec.ModelDescr(
            name=safe_name(f"napari-dlbio {title}"),
            description=summary[:1024],
            authors=[spec.Author(name=author.replace("/", "-")) for author in authors],
            cite=[spec.CiteEntry(text=text, doi=doi) for text, doi in card_citations(card)],
            license=licence,
            documentation=spec.FileDescr(source=documentation),
            covers=[spec.FileDescr(source=folder / "cover.png")],
            inputs=parts.inputs,
            outputs=parts.outputs,
            tags=[
                "napari-dlbio",
                "2d",
                "tensorflow",
                "keras",
                *parts.tags,
                *builtin_tags(name),
            ],
            weights=write_weights(spec, model, folder),
            config=spec.Config(
                napari_dlbio={"task": model.task.value, "config": model.config.to_dict()}
            ),
        )
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise InputDataError(
            f"The bioimage.io description is not valid: {one_line(error)}"
        ) from None


def _save_package(descr: Any, path: Path) -> None:
    from bioimageio.spec import save_bioimageio_package

    try:
        save_bioimageio_package(descr, output_path=path)
    except ValueError as error:
        raise InputDataError(
            f"The bioimage.io package could not be written: {one_line(error)}"
        ) from None
