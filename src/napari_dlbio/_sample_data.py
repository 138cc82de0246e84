"""npe2 sample data: real ISBI 2012 EM slices and PlantVillage leaves shipped in the package.

Provenance, citations and licences: ``sample_data/README.md`` next to this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio.core.io import list_class_folder, read_class_images, read_stack

SAMPLE_DIR = Path(__file__).parent / "sample_data"
ISBI_IMAGE = SAMPLE_DIR / "isbi2012_train-volume_slices0-4.tif"
ISBI_LABELS = SAMPLE_DIR / "isbi2012_train-labels_slices0-4.tif"
LEAF_FOLDER = SAMPLE_DIR / "plantvillage"

SEGMENTATION_CLASSES = ("background", "membrane")
_CITATION_EM = (
    "ISBI 2012 / Cardona et al. 2010; non-commercial use, cite (see sample_data/README.md)"
)
_CITATION_LEAVES = "PlantVillage, Mohanty et al. 2016; CC BY-SA 3.0 (see sample_data/README.md)"

LayerData = tuple[Any, dict[str, Any], str]


def make_isbi_sample() -> list[LayerData]:
    """Five ISBI 2012 EM sections and their membrane ground truth.

    Returns
    -------
    list of LayerData
        An Image layer ``(5, 512, 512)`` ``uint8`` and a Labels layer in the annotation
        convention: 0 = not annotated, 1 = background, 2 = membrane (ISBI labels use
        0 = membrane, 255 = cell interior).
    """
    image = read_stack(ISBI_IMAGE).data
    isbi = read_stack(ISBI_LABELS).data
    annotations = np.where(isbi == 0, 2, 1).astype(np.uint8)
    image_meta = {"source": str(ISBI_IMAGE), "axes": "ZYX", "attribution": _CITATION_EM}
    label_meta = {
        "source": str(ISBI_LABELS),
        "class_names": list(SEGMENTATION_CLASSES),
        "convention": "0 = not annotated, 1 = background, 2 = membrane",
        "attribution": _CITATION_EM,
    }
    return [
        (image, {"name": "ISBI 2012 EM", "metadata": image_meta}, "image"),
        (annotations, {"name": "ISBI 2012 ground truth", "metadata": label_meta}, "labels"),
    ]


def make_leaf_sample() -> list[LayerData]:
    """Forty-five PlantVillage leaf photos, three per class, as one RGB stack.

    Returns
    -------
    list of LayerData
        One Image layer ``(45, 256, 256, 3)`` ``uint8`` whose metadata holds
        ``class_names`` (15), ``class_indices`` and ``paths``, like the class-folder reader.
    """
    images = read_class_images(list_class_folder(LEAF_FOLDER))
    metadata = {**images.as_metadata(), "attribution": _CITATION_LEAVES}
    return [
        (images.data, {"name": "PlantVillage leaves", "rgb": True, "metadata": metadata}, "image")
    ]
