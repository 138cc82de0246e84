"""The shipped samples: real data, right shapes and classes, no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_dlbio._sample_data import SAMPLE_DIR, make_isbi_sample, make_leaf_sample


def test_isbi_sample_gives_em_image_and_membrane_annotations() -> None:
    (image, image_kwargs, image_type), (labels, label_kwargs, label_type) = make_isbi_sample()

    assert (image_type, label_type) == ("image", "labels")
    assert image.shape == labels.shape == (5, 512, 512)
    assert image.dtype == np.uint8
    assert set(np.unique(labels)) == {1, 2}
    membrane = (labels == 2).mean()
    assert 0.15 < membrane < 0.30  # ISBI membranes cover about 22 % of the pixels
    assert label_kwargs["metadata"]["class_names"] == ["background", "membrane"]
    assert "Cardona" in image_kwargs["metadata"]["attribution"]


def test_isbi_sample_matches_the_public_stack(isbi_dir: Path) -> None:
    (image, _, _), (labels, _, _) = make_isbi_sample()

    volume = tifffile.imread(isbi_dir / "train-volume.tif")[:5]
    isbi = tifffile.imread(isbi_dir / "train-labels.tif")[:5]
    np.testing.assert_array_equal(image, volume)
    # ISBI 0 = membrane must become annotation 2 (membrane), 255 must become 1.
    np.testing.assert_array_equal(labels == 2, isbi == 0)
    np.testing.assert_array_equal(labels == 1, isbi == 255)


def test_leaf_sample_gives_three_photos_per_class() -> None:
    ((data, kwargs, layer_type),) = make_leaf_sample()

    meta = kwargs["metadata"]
    assert layer_type == "image"
    assert kwargs["rgb"] is True
    assert data.shape == (45, 256, 256, 3)
    assert data.dtype == np.uint8
    assert len(meta["class_names"]) == 15
    assert np.bincount(meta["class_indices"]).tolist() == [3] * 15
    assert all(Path(p).is_file() for p in meta["paths"])
    assert meta["skipped"] == []
    assert "CC BY-SA" in meta["attribution"]


def test_leaf_sample_classes_are_the_dataset_classes(plantvillage_dir: Path) -> None:
    ((_, kwargs, _),) = make_leaf_sample()

    dataset_classes = sorted(p.name for p in plantvillage_dir.iterdir() if p.is_dir())
    assert kwargs["metadata"]["class_names"] == dataset_classes
    for path in kwargs["metadata"]["paths"]:
        original = plantvillage_dir / Path(path).parent.name / Path(path).name
        assert Path(path).read_bytes() == original.read_bytes()


def test_sample_attribution_is_shipped() -> None:
    readme = (SAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    for fact in ("CC BY-SA 3.0", "non-commercial", "Cardona", "Mohanty", "Arganda-Carreras"):
        assert fact in readme


def test_opening_samples_through_npe2_does_not_import_tensorflow() -> None:
    code = (
        "import sys, npe2\n"
        "pm = npe2.PluginManager.instance(); pm.discover()\n"
        "samples = dict(pm.iter_sample_data())['napari-dlbio']\n"
        "shapes = [layer[0].shape for s in samples for layer in s.open()]\n"
        "assert 'tensorflow' not in sys.modules, 'sample data imported TensorFlow'\n"
        "print(shapes)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "(5, 512, 512), (5, 512, 512), (45, 256, 256, 3)" in result.stdout
