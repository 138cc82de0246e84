"""Objects on the command line: ``dlbio predict --instances DIR`` and the object scores of
``dlbio evaluate``.

Per slice (the default), objects are cut and measured as each slice is predicted and written
straight to ``DIR``; through the stack (``--through-stack``) they need the whole prediction in
memory, which is checked before any work starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.io import physical_memory_bytes
from napari_dlbio.core.object_files import ObjectFiles, object_files
from napari_dlbio.core.object_finder import (
    ObjectKind,
    SliceObjectFinder,
    find_objects_through_stack,
    object_kinds,
    score_objects,
)
from napari_dlbio.core.object_settings import ObjectSettings
from napari_dlbio.core.segmentation_config import SegmentationConfig

# Objects through the stack hold the probabilities of the whole stack: at most this share
# of the computer's memory.
_MEMORY_SHARE = 0.5


def object_settings(args: argparse.Namespace) -> ObjectSettings:
    """The object settings of the command line, defaults for those not given."""
    changes: dict[str, Any] = {"through_stack": bool(args.through_stack)}
    if args.smoothing is not None:
        changes["smoothing"] = args.smoothing
    if args.seed_threshold is not None:
        changes["seed_threshold"] = args.seed_threshold
    return ObjectSettings().replace(**changes)


def kinds_of(config: SegmentationConfig) -> list[ObjectKind]:
    """The kinds of object a segmentation model's classes give."""
    return object_kinds(config.class_names, config.class_roles())


def pixel_size(args: argparse.Namespace) -> tuple[float, ...]:
    """``--pixel-size`` as (z, y, x)."""
    sizes = tuple(args.pixel_size or (1.0,))
    if len(sizes) > 3 or not all(size > 0 for size in sizes):
        raise InputDataError(
            f"--pixel-size takes one, two (Y X) or three (Z Y X) sizes above 0, not {sizes}."
        )
    if len(sizes) == 1:
        sizes = sizes * 2
    return (1.0,) * (3 - len(sizes)) + sizes


class ObjectOutput:
    """Objects of a prediction written to a folder as the slices arrive.

    Parameters
    ----------
    folder
        Where ``cells.tif``, ``<class>.tif`` and ``objects.csv`` go.
    config
        The model's config (its classes and their roles).
    settings
        How objects are cut.
    images
        The (Z, Y, X[, C]) stack being predicted (for the mean intensity).
    scale
        Pixel size (z, y, x).
    """

    def __init__(
        self,
        folder: Path,
        config: SegmentationConfig,
        settings: ObjectSettings,
        images: np.ndarray,
        scale: Sequence[float],
    ) -> None:
        self.kinds = kinds_of(config)
        self.settings = settings
        self.images = images
        self.scale = tuple(scale)
        self.folder = folder
        self._files: ObjectFiles | None = None
        self._collected: list[np.ndarray] = []
        if settings.through_stack:
            check_fits_in_memory(images.shape[:3], config.n_classes)
        else:
            self._finder = SliceObjectFinder(self.kinds, settings, self.scale)

    def open(self) -> AbstractContextManager[ObjectFiles]:
        """The folder's files, to enter before the first slice."""
        return object_files(self.folder, self.kinds, int(self.images.shape[0]))

    def slice_step(self, files: ObjectFiles) -> Callable[[int, np.ndarray], None]:
        """What to do with each predicted slice's (Y, X, K) probabilities."""

        def step(index: int, probabilities: np.ndarray) -> None:
            if self.settings.through_stack:
                self._collected.append(probabilities.astype(np.float32, copy=False))
            else:
                files.add_slice(*self._finder.add(index, probabilities, self.images[index]))

        return step

    def finish(self, files: ObjectFiles) -> None:
        """Through the stack: cut and write the objects once every slice is predicted."""
        if self.settings.through_stack:
            labels, table = find_objects_through_stack(
                np.stack(self._collected),
                np.asarray(self.images),
                self.kinds,
                self.settings,
                self.scale,
            )
            files.add_volume(labels, table)


def check_fits_in_memory(shape: Sequence[int], n_classes: int) -> None:
    """Refuse objects through a stack whose probabilities would not fit in memory."""
    needed = int(np.prod(shape)) * n_classes * 4 * 2
    memory = physical_memory_bytes()
    if memory is not None and needed > _MEMORY_SHARE * memory:
        raise InputDataError(
            f"Objects through the stack need the whole prediction in memory, about "
            f"{needed / 2**30:.1f} GiB, more than half of this computer's "
            f"{memory / 2**30:.1f} GiB. Find them per slice (leave out --through-stack), or "
            "crop the stack."
        )


def object_scores(
    config: SegmentationConfig,
    annotation: np.ndarray,
    probabilities: np.ndarray,
    images: np.ndarray,
    settings: ObjectSettings,
) -> tuple[dict[str, Any], list[str]]:
    """Object scores of a prediction against dense ground truth, and notes for the user.

    ``annotation`` is in the annotation convention (0 = not annotated, 1 = background,
    k + 1 = class k); object scores need every pixel annotated.
    """
    kinds = kinds_of(config)
    if np.any(annotation == 0):
        return {}, [
            "Objects were not scored: the labels leave pixels unannotated, and objects "
            "need ground truth on every pixel."
        ]
    if settings.through_stack:
        labels, _ = find_objects_through_stack(probabilities, images, kinds, settings, (1, 1, 1))
    else:
        finder = SliceObjectFinder(kinds, settings, (1.0, 1.0))
        per_slice = [finder.add(z, probabilities[z], images[z])[0] for z in range(len(images))]
        labels = {kind.name: np.stack([found[kind.name] for found in per_slice]) for kind in kinds}
    mask = np.argmax(probabilities, axis=-1)
    report = score_objects(annotation.astype(np.int16) - 1, mask, kinds, labels)
    return report, []


def scores_text(report: dict[str, Any]) -> list[str]:
    """The object scores as lines below the evaluation table (none without scores)."""
    lines = [""] if report else []
    for name, figures in report.items():
        matching = figures.get("cells", figures)
        line = (
            f"{name:<24} F1@0.5 {_figure(matching['f1'])}  precision "
            f"{_figure(matching['precision'])}  recall {_figure(matching['recall'])}"
        )
        if "v_rand" in figures:
            line += f"  V_rand {_figure(figures['v_rand'])}  V_info {_figure(figures['v_info'])}"
        lines.append(line)
    return lines


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
