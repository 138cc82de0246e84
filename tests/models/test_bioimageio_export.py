"""bioimage.io export: packages that bioimage.io's own test runs and that predict as we do."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# bioimageio.core reads KERAS_BACKEND once, on import, defaults it to "torch" and writes it
# back into os.environ, where every later subprocess of the test run would inherit it.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
bioimageio_core = pytest.importorskip(
    "bioimageio.core", reason='bioimage.io export needs: pip install "napari-dlbio[bioimageio]"'
)

from napari_dlbio.core.config import Task  # noqa: E402
from napari_dlbio.core.errors import ModelFolderError  # noqa: E402
from napari_dlbio.core.io import OutputExistsError, read_stack  # noqa: E402
from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig  # noqa: E402
from napari_dlbio.models.bioimageio_export import export_bioimageio  # noqa: E402
from napari_dlbio.models.classification import model_probabilities  # noqa: E402
from napari_dlbio.models.segmentation import predict_segmentation  # noqa: E402
from napari_dlbio.models.store import ModelFolder, load_model_folder  # noqa: E402
from napari_dlbio.models.unet import build_unet  # noqa: E402

pytestmark = pytest.mark.usefixtures("work_elsewhere")


@pytest.fixture(scope="module")
def leaf_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("leaves") / "leaves.zip"
    return export_bioimageio("builtin:plantvillage-15", out)


def _assert_passes(package: Path, weight_format: Any = None) -> None:
    summary = bioimageio_core.test_model(package, weight_format=weight_format)
    failed = [
        f"{detail.name}: {[error.msg for error in detail.errors]}"
        for detail in summary.details
        if detail.status == "failed"
    ]
    assert summary.status == "passed", failed


def _member(package: Path, name: str) -> np.ndarray:
    with zipfile.ZipFile(package) as archive:
        return np.load(io.BytesIO(archive.read(name)))


def _bioimageio_prediction(package: Path, output_id: str) -> np.ndarray:
    sample = bioimageio_core.predict(
        model=package, inputs={"image": _member(package, "test_input.npy")}
    )
    return np.asarray(sample.members[output_id].data)


def test_em_package_passes_bioimageio_test(em_package: Path) -> None:
    _assert_passes(em_package)


def test_em_package_predicts_our_mask(em_package: Path) -> None:
    image = _member(em_package, "test_input.npy")[0, ..., 0]
    ours = predict_segmentation(load_model_folder("builtin:em-membranes"), image).mask[0]
    theirs = _bioimageio_prediction(em_package, "probabilities")[0, ..., 0] > 0.5
    assert ours.shape == theirs.shape == (512, 512)
    assert np.mean(theirs == (ours == 1)) >= 0.999


def test_em_package_describes_the_model(em_package: Path) -> None:
    descr = bioimageio_core.load_model_description(em_package)
    assert str(descr.format_version).startswith("0.5.")
    assert descr.license == "CC-BY-NC-4.0"  # the ISBI data: non-commercial, with citation
    assert {str(entry.doi) for entry in descr.cite} >= {
        "10.3389/fnana.2015.00142",
        "10.1371/journal.pbio.1000502",
        "10.1371/journal.pone.0038011",  # TrakEM2, which the data's terms ask to cite
    }
    (image,) = descr.inputs
    assert [step.id for step in image.preprocessing if step.id == "scale_range"] == ["scale_range"]
    scale = next(step for step in image.preprocessing if step.id == "scale_range").kwargs
    assert (scale.min_percentile, scale.max_percentile) == (1.0, 99.8)
    assert [str(axis) for axis in scale.axes] == ["y", "x"]
    assert image.axes[1].size.step == 32  # the U-Net's size multiple
    assert descr.weights.keras_hdf5 is not None
    with zipfile.ZipFile(em_package) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.md").decode()
    assert {"rdf.yaml", "cover.png", "model.h5", "model.keras", "README.md"} <= names
    assert "## Validation" in readme
    assert "Terms" in readme


def test_leaf_package_passes_and_gives_the_network_output(leaf_package: Path) -> None:
    _assert_passes(leaf_package)
    photo = _member(leaf_package, "test_input.npy").astype(np.uint8)
    model = load_model_folder("builtin:plantvillage-15", Task.CLASSIFICATION)
    ours = model_probabilities(model.model, photo)
    theirs = _bioimageio_prediction(leaf_package, "class_probabilities")
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    descr = bioimageio_core.load_model_description(leaf_package)
    assert descr.license == "CC-BY-SA-3.0"
    assert descr.outputs[0].axes[1].channel_names == list(model.config.class_names)


def test_builtin_licence_and_existing_files_are_kept(em_package: Path, tmp_path: Path) -> None:
    before = em_package.read_bytes()
    with pytest.raises(OutputExistsError):
        export_bioimageio("builtin:em-membranes", em_package)
    assert em_package.read_bytes() == before
    with pytest.raises(ModelFolderError, match=r"CC-BY-NC-4\.0"):
        export_bioimageio("builtin:em-membranes", tmp_path / "x.zip", licence="CC-BY-4.0")
    assert list(tmp_path.iterdir()) == []


def test_own_model_in_memory_with_a_sample(tmp_path: Path) -> None:
    config = SegmentationConfig(
        class_names=("background", "membrane", "mitochondrion"),
        network=UNetConfig(depth=2, stem_stride=1, base_filters=8),
        tile_overlap=16,
    )
    network = build_unet(config.network, 1, config.n_classes)
    model = ModelFolder(model=network, task=Task.SEGMENTATION, config=config)
    sample = read_stack(
        Path(__file__).parents[2] / "src/napari_dlbio/sample_data/"
        "isbi2012_train-volume_slices0-4.tif"
    ).data[1, :100, :150]
    package = export_bioimageio(model, tmp_path / "mine.zip", sample=sample, authors=["A. User"])
    _assert_passes(package, "keras_v3")
    descr = bioimageio_core.load_model_description(package)
    assert descr.license == "CC-BY-4.0"
    assert [author.name for author in descr.authors] == ["A. User"]
    assert _member(package, "test_input.npy").shape == (1, 100, 148, 1)
