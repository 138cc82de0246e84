"""The words of a bioimage.io package: card, documentation, citations, licence, tags, names.

Everything here is plain text from a model's card, config and metrics; the package's
description (``bioimageio.spec``) is assembled from it in
:mod:`napari_dlbio.models.bioimageio_export`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from napari_dlbio import __version__
from napari_dlbio.core.builtin_models import CARD_FILE, builtin_model
from napari_dlbio.core.classifier_config import ClassifierConfig
from napari_dlbio.core.config import JsonConfig, Task
from napari_dlbio.core.errors import ModelFolderError
from napari_dlbio.core.segmentation_config import SegmentationConfig

#: Licence of a model trained on your own data, unless ``licence`` says otherwise.
DEFAULT_LICENCE = "CC-BY-4.0"
# What the built-in models' training data allow (their cards' "Terms"): the ISBI 2012 /
# Cardona et al. stack is for non-commercial use with citation, PlantVillage is CC BY-SA 3.0.
_BUILTIN_LICENCES = {
    "em-membranes": "CC-BY-NC-4.0",
    "em-membranes-mitochondria": "CC-BY-NC-4.0",
    "plantvillage-15": "CC-BY-SA-3.0",
}
_BUILTIN_TAGS = {
    "em-membranes": ("electron-microscopy", "cell-membrane", "brain"),
    "em-membranes-mitochondria": ("electron-microscopy", "cell-membrane", "mitochondria"),
    "plantvillage-15": ("plant",),
}
_AUTHOR = "napari-dlbio developers"
# The card's data terms ask every publication to cite TrakEM2 as well.
_TRAKEM2 = (
    "Cardona A, Saalfeld S, Schindelin J, et al. (2012) TrakEM2 software for neural circuit "
    "reconstruction. PLoS ONE 7(6): e38011.",
    "10.1371/journal.pone.0038011",
)
_MAX_CARD_BYTES = 2**20
_CITATION = re.compile(
    r"(?P<text>[^;]+?(?:doi:\s*(?P<doi>10\.\d{4,}/[^\s;]+)|arXiv:\s*(?P<arxiv>\d{4}\.\d{4,5})))"
    r"\s*(?:;|$)",
    re.MULTILINE,
)


def builtin_licence(name: str, licence: str | None) -> str:
    """The licence built-in model ``name`` is shared under, which ``licence`` may only repeat.

    Raises
    ------
    ModelFolderError
        No licence is recorded for ``name``, or ``licence`` is another one.
    """
    required = _BUILTIN_LICENCES.get(name)
    if required is None:
        raise ModelFolderError(
            f"builtin:{name} has no recorded licence for bioimage.io; read its card's terms."
        )
    if licence is not None and licence != required:
        raise ModelFolderError(
            f"builtin:{name} is shared under {required}, as the terms of its training data "
            f"require; it cannot be exported under {licence}."
        )
    return required


def default_authors(name: str | None) -> list[str]:
    """The authors of a package nobody named: the developers for built-in model ``name``."""
    return [_AUTHOR if name else "Anonymous"]


def builtin_tags(name: str | None) -> tuple[str, ...]:
    """The bioimage.io tags of built-in model ``name`` beyond its task's; none for others."""
    return _BUILTIN_TAGS.get(name or "", ())


def channel_names(channels: int) -> list[str]:
    """Names of an input's channels: grey, red/green/blue, or numbered."""
    if channels == 1:
        return ["grey"]
    if channels == 3:
        return ["red", "green", "blue"]
    return [f"channel {i}" for i in range(channels)]


def _channel_text(channels: int) -> str:
    return {1: "grey (1 channel)", 3: "RGB (3 channels)"}.get(channels, f"{channels} channels")


def segmentation_notes(
    config: SegmentationConfig, source: str, shape: tuple[int, ...], sigmoid: bool
) -> list[str]:
    """The package notes of a U-Net whose test input, ``source``, has ``shape`` and whose
    output is one ``sigmoid`` channel or a softmax."""
    rule = (
        f"a pixel is {config.class_names[1]} where its probability is above 0.5"
        if sigmoid
        else "each pixel's class is its most probable channel (background first)"
    )
    return [
        f"- Test input: {source}, {shape[0]} x {shape[1]} pixels.",
        f"- Input `image`: {_channel_text(config.input_channels)}, sides a multiple of "
        f"{config.network.size_multiple} pixels (napari-dlbio pads other sizes by "
        "reflection, then crops).",
        f"- Pre-processing: `scale_range` over y and x of each image, percentiles "
        f"{config.normalise_low:g} and {config.normalise_high:g} mapped to 0 and 1, as "
        "napari-dlbio normalises every slice.",
        f"- Output `probabilities`: the network's own {'sigmoid' if sigmoid else 'softmax'}; "
        f"{rule}. napari-dlbio predicts larger images in tiles of {config.tile_size} pixels "
        f"overlapping by {config.tile_overlap}, blended where they overlap"
        + (
            f" and drops regions under {config.min_region_pixels} pixels."
            if config.min_region_pixels > 1
            else "."
        ),
    ]


def classifier_notes(config: ClassifierConfig, source: str) -> list[str]:
    """The package notes of a classifier whose test photo is ``source``."""
    size = config.input_size
    notes = [
        f"- Test input: {source}, resized to {size} x {size} pixels.",
        f"- Input `image`: {_channel_text(config.input_channels)} of {size} x {size} pixels "
        "with values 0-255. Resize photos to that size first (napari-dlbio brings them to 8 "
        "bit, then resizes with anti-aliasing); the network normalises them itself, so there "
        "is no pre-processing step.",
        "- Output `class_probabilities`: the network's softmax; the class is the most "
        "probable channel.",
    ]
    if config.test_time_augmentation:
        notes.append(
            "- napari-dlbio averages the probabilities of the 8 flips and quarter turns of "
            "each photo (test-time augmentation); this package gives one pass of the "
            "network, whose probabilities can differ slightly."
        )
    notes.append("- The cover shows the test photo and its Grad-CAM for the predicted class.")
    return notes


def card_text(folder: Path | None, name: str | None, task: Task, config: JsonConfig) -> str:
    """The model card: the model folder's ``README.md``, or one written from the config."""
    card = folder / CARD_FILE if folder is not None else None
    if card is not None and card.is_file() and card.stat().st_size <= _MAX_CARD_BYTES:
        return card.read_text(encoding="utf-8")
    title = name or (folder.name if folder is not None else "napari-dlbio model")
    lines = [
        f"# {title}",
        "",
        f"A {task.value} model trained with napari-dlbio {__version__}.",
        "",
        f"Classes: {', '.join(config.class_names)}.",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(config.to_dict(), indent=2, sort_keys=True),
        "```",
    ]
    return "\n".join(lines) + "\n"


def summary_text(name: str | None, task: Task, class_names: Sequence[str]) -> str:
    """The package's one-paragraph description: a built-in model's summary, or one made up."""
    if name is not None:
        return builtin_model(name).summary
    return f"A napari-dlbio {task.value} model of {', '.join(class_names)}."


def documentation_text(card: str, notes: Sequence[str], metrics: Mapping[str, Any]) -> str:
    """The package's documentation: the card, the package notes and, unless the card has
    one, a validation section from the model's ``metrics``."""
    text = card.rstrip() + "\n\n## bioimage.io package\n\n" + "\n".join(notes) + "\n"
    if not re.search(r"^#+.*validation", card, re.IGNORECASE | re.MULTILINE):
        text += "\n## Validation\n\n" + _validation_text(metrics) + "\n"
    return text


def _validation_text(metrics: Mapping[str, Any]) -> str:
    figures = metrics.get("held_out") or metrics.get("validation")
    where = (
        "The figures above (`held_out` in the model folder's `metrics.json`) were measured "
        "on data held out of training with `dlbio evaluate`."
        if "held_out" in metrics
        else "Validation figures of the training run (napari-dlbio's `metrics.json`):"
    )
    text = where
    if figures and "held_out" not in metrics:
        summary = {k: v for k, v in figures.items() if k in ("accuracy", "pixel_accuracy")}
        classes = figures.get("classes", {})
        summary.update(
            {
                name: {k: round(v, 4) for k, v in values.items() if isinstance(v, float)}
                for name, values in classes.items()
            }
        )
        text += "\n\n```json\n" + json.dumps(summary, indent=2) + "\n```"
    elif not figures:
        text = "No validation figures were recorded for this model."
    return (
        text + "\n\n`bioimageio test` reproduces the package's test output from its test input "
        "(a real image, not a held-out score)."
    )


def card_citations(card: str) -> list[tuple[str, str]]:
    """The training data's citations, ``(text, doi)``, from the card's "Training data"
    section."""
    section = re.search(r"^#+\s*Training data\s*$(.*?)(?=^#|\Z)", card, re.MULTILINE | re.DOTALL)
    if section is None:
        return []
    body = section.group(1)
    paragraph = body.split("**Terms.**")[0]
    entries = []
    for match in _CITATION.finditer(paragraph.replace("\n", " ")):
        doi = match["doi"].rstrip(".") if match["doi"] else f"10.48550/arXiv.{match['arxiv']}"
        entries.append((match["text"].strip(), doi))
    if "TrakEM2" in body:
        entries.append(_TRAKEM2)
    return entries


def safe_name(text: str) -> str:
    """A name bioimage.io accepts: letters, digits, ``_+- ()``, 5 to 128 characters."""
    safe = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", text)[:128]
    return safe if len(safe) >= 5 else f"{safe} model"


def one_line(error: ValueError) -> str:
    """A pydantic validation error's first problems on one line, other errors as they are."""
    problems = getattr(error, "errors", None)
    if not callable(problems):
        return " ".join(str(error).split())
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in problems()[:3]
    )
