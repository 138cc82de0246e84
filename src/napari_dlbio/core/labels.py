"""Label conventions: annotations, predicted masks and class indices.

- Annotation (what the user paints): 0 = not annotated, 1 = background, k >= 2 = class k-1.
- Predicted mask: 0 = background, k = class k.
- Class index (what the network sees): 0..K-1, 0 = background, i.e. annotation - 1.

Dense label images from elsewhere (e.g. ISBI 2012: 0 = membrane, 255 = interior) become
annotations through an explicit mapping of label values to class names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from napari_dlbio.core.errors import ConfigError, InputDataError

# uint8 annotations hold values 0..255, and value 0 means "not annotated".
MAX_CLASSES = 255

_SHOWN_VALUES = 8


def parse_label_values(text: str) -> dict[int, str]:
    """Parse a mapping of label values to class names such as ``"255=background,0=membrane"``.

    Several values may map to the same class (``"0=background,1=background,2=cell"``),
    but each value appears once.

    Parameters
    ----------
    text : str
        Comma-separated ``value=class name`` pairs; spaces and empty items are ignored.

    Returns
    -------
    dict of int to str
        Label value to class name, in the order given.

    Raises
    ------
    ConfigError
        On an empty text, an item without ``=``, a value that is not a whole number,
        an empty class name or a value given twice.
    """
    example = 'for example "255=background,0=membrane"'
    # Empty items (a trailing comma) are ignored.
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"No label values given; write value=class pairs, {example}.")
    mapping: dict[int, str] = {}
    for item in items:
        value_text, sep, name = (part.strip() for part in item.partition("="))
        if not sep:
            raise ConfigError(
                f"Label value item {item!r} has no '='; write value=class, {example}."
            )
        try:
            value = int(value_text)
        except ValueError:
            raise ConfigError(
                f"Label value {value_text!r} in {item!r} is not a whole number; {example}."
            ) from None
        if not name:
            raise ConfigError(f"Label value {value} has no class name; {example}.")
        if value in mapping:
            raise ConfigError(
                f"Label value {value} is given twice ({mapping[value]!r} and {name!r}); "
                "give each value once."
            )
        mapping[value] = name
    return mapping


def annotation_from_dense(
    labels: np.ndarray, value_to_class: Mapping[int, str], class_names: Sequence[str]
) -> np.ndarray:
    """Turn a dense label image into an annotation (every pixel annotated).

    Parameters
    ----------
    labels : np.ndarray
        Integer label image of any shape.
    value_to_class : mapping of int to str
        Class name of each label value (see :func:`parse_label_values`).
    class_names : sequence of str
        The model's classes, background first; the class at index i gets annotation i + 1.

    Returns
    -------
    np.ndarray
        uint8 annotation of the same shape.

    Raises
    ------
    InputDataError
        When the labels hold values that the mapping does not name, or the mapping names a
        class that is not among ``class_names``.
    """
    names = list(class_names)
    if len(names) > MAX_CLASSES:
        raise InputDataError(f"At most {MAX_CLASSES} classes are supported, got {len(names)}.")
    unknown = sorted({name for name in value_to_class.values() if name not in names})
    if unknown:
        raise InputDataError(
            f"The label mapping names class(es) {', '.join(map(repr, unknown))} that are not "
            f"among the classes {names}; use those class names in --label-values."
        )
    labels = np.asarray(labels)
    annotation = np.zeros(labels.shape, dtype=np.uint8)
    mapped = np.zeros(labels.shape, dtype=bool)
    for value, name in value_to_class.items():
        hit = labels == value
        annotation[hit] = names.index(name) + 1
        mapped |= hit
    if not mapped.all():
        missing = np.unique(labels[~mapped])
        shown = ", ".join(str(v) for v in missing[:_SHOWN_VALUES].tolist())
        more = f" and {missing.size - _SHOWN_VALUES} more" if missing.size > _SHOWN_VALUES else ""
        raise InputDataError(
            f"The labels contain value(s) {shown}{more} that have no class. Give every value "
            f'a class with --label-values, for example "{missing[0]}=background".'
        )
    return annotation


def annotation_from_mask(mask: np.ndarray) -> np.ndarray:
    """Turn a predicted mask (0 = background, k = class k) into an annotation (mask + 1).

    Used to accept a prediction as annotations before correcting it.

    Raises
    ------
    InputDataError
        When the mask is not integer, negative, or has a class above 254.
    """
    mask = np.asarray(mask)
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise InputDataError(f"A mask must hold whole numbers, got {mask.dtype}.")
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= MAX_CLASSES):
        raise InputDataError(
            f"A mask must hold classes 0..{MAX_CLASSES - 1}, got {int(mask.min())}.."
            f"{int(mask.max())}."
        )
    return mask.astype(np.uint8) + np.uint8(1)


def with_reviewed_slices(annotation: np.ndarray, reviewed: Mapping[int, np.ndarray]) -> np.ndarray:
    """The annotation plus what the user left alone on the slices they corrected.

    A user who corrects a prediction on a slice tells the network where it is wrong and,
    by leaving them, that the other pixels are right.  Trained on the corrections alone,
    the network only ever sees where it was wrong and swings between classes
    (``benchmarks/interactive_loop.py``).

    Parameters
    ----------
    annotation
        (Z, Y, X) or (Y, X) annotation: 0 = not annotated, k + 1 = class k.
    reviewed
        Slice index -> the predicted mask (Y, X) the user saw while correcting that slice
        (0 = background, k = class k).

    Returns
    -------
    np.ndarray
        A new annotation in which the unpainted pixels of every reviewed slice hold the
        prediction's class; painted pixels and the other slices are unchanged.
    """
    if not reviewed:
        return annotation
    labels = np.array(annotation, copy=True)
    slices = labels.reshape(-1, *labels.shape[-2:])  # a 2D annotation is one slice
    for z, mask in reviewed.items():
        slices[z] = np.where(slices[z] == 0, annotation_from_mask(mask), slices[z])
    return labels


def classes_from_annotation(annotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split an annotation into class indices and the mask of annotated pixels.

    Returns
    -------
    tuple of np.ndarray
        ``(classes, annotated)``: uint8 class index (annotation - 1, 0 where not
        annotated) and boolean ``annotation > 0``.
    """
    annotation = np.asarray(annotation)
    annotated = annotation > 0
    classes = (np.maximum(annotation, 1) - 1).astype(np.uint8)
    return classes, annotated


def annotated_classes(annotation: np.ndarray) -> set[int]:
    """Class indices (annotation value - 1) that have at least one annotated pixel."""
    annotation = np.asarray(annotation)
    if annotation.size == 0:
        return set()
    if np.issubdtype(annotation.dtype, np.unsignedinteger) and annotation.itemsize <= 2:
        # bincount is one fast pass; np.unique would sort the whole stack.
        counts = np.bincount(annotation.reshape(-1))
        values = np.flatnonzero(counts)
    else:
        values = np.unique(annotation)
    return {int(v) - 1 for v in values if v > 0}


def check_annotation(
    annotation: np.ndarray, n_classes: int, image_shape: tuple[int, ...] | None = None
) -> None:
    """Check that an annotation can train a model with ``n_classes`` classes.

    Parameters
    ----------
    annotation : np.ndarray
        Annotation (Z, Y, X) (or (Y, X)).
    n_classes : int
        Number of classes including background; valid values are 0..n_classes.
    image_shape : tuple of int, optional
        Shape of the image, (Z, Y, X) or (Z, Y, X, C); its leading axes must equal the
        annotation's shape.

    Raises
    ------
    InputDataError
        When the annotation is not integer, has values outside 0..n_classes, does not
        match the image's shape, or has no annotated pixel.
    """
    annotation = np.asarray(annotation)
    check_annotation_values(annotation)
    if image_shape is not None:
        image_shape = tuple(image_shape)
        if image_shape[: annotation.ndim] != annotation.shape or len(
            image_shape
        ) - annotation.ndim not in (0, 1):
            raise InputDataError(
                f"The annotation has shape {annotation.shape} but the image has shape "
                f"{image_shape}; paint the annotation on a Labels layer made for this image."
            )
    if annotation.size == 0 or not annotation.any():
        raise InputDataError(
            "Nothing is annotated yet: paint at least a few strokes of each class "
            "(1 = background, 2 and up = the other classes)."
        )
    high = int(annotation.max())
    if high > n_classes:
        raise InputDataError(
            f"The annotation holds value {high} but there are only {n_classes} classes "
            f"(label 1 = background, up to label {n_classes}); add a class or repaint those "
            "pixels."
        )


def check_annotation_values(annotation: np.ndarray) -> None:
    """Check that an annotation holds whole numbers from 0 (not annotated) up.

    Raises
    ------
    InputDataError
        For floating-point (or other non-integer) or negative values.
    """
    if not (np.issubdtype(annotation.dtype, np.integer) or annotation.dtype == bool):
        raise InputDataError(
            f"Annotations must hold whole numbers (a Labels layer), got {annotation.dtype}."
        )
    low = int(annotation.min()) if annotation.size else 0
    if low < 0:
        raise InputDataError(
            f"The annotation holds negative value {low}; use 0 for 'not annotated', "
            "1 for background and 2 and up for the other classes."
        )


def prediction_edit(
    annotation: np.ndarray,
    mask: np.ndarray,
    *,
    overwrite: bool = False,
    accepted: np.ndarray | None = None,
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The edit that copies a predicted mask into an annotation, as (indices, values).

    Parameters
    ----------
    annotation
        The user's annotation: 0 = not annotated, k + 1 = class k.
    mask
        Predicted classes of the same shape (0 = background).
    overwrite
        Also replace pixels the user has annotated; by default they are kept.
    accepted
        Pixels that hold an earlier accepted prediction rather than the user's strokes
        (boolean, same shape): they take the new prediction too.

    Returns
    -------
    tuple
        Fancy indices of the pixels that change and their new annotation values, ready
        for an undoable edit (napari's ``Labels.data_setitem``).

    Raises
    ------
    InputDataError
        When the shapes differ.
    """
    annotation = np.asarray(annotation)
    mask = np.asarray(mask)
    if annotation.shape != mask.shape:
        raise InputDataError(
            f"The prediction {mask.shape} does not match the annotation {annotation.shape}; "
            "predict the image this annotation belongs to."
        )
    values = mask.astype(np.int64) + 1
    changes = values != annotation
    if not overwrite:
        free = annotation == 0
        changes &= free if accepted is None else free | accepted
    indices = np.nonzero(changes)
    return indices, values[indices].astype(annotation.dtype)
