"""bioimage.io import: packages of ours and of other tools predict, fine-tune and save."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

# bioimageio.core reads KERAS_BACKEND once, on import, and defaults it to "torch".
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
bioimageio_core = pytest.importorskip(
    "bioimageio.core", reason='bioimage.io import needs: pip install "napari-dlbio[bioimageio]"'
)

from napari_dlbio.cli import main  # noqa: E402
from napari_dlbio.core.bioimage_processing import StepKind  # noqa: E402
from napari_dlbio.core.config import Task  # noqa: E402
from napari_dlbio.core.errors import ModelFolderError  # noqa: E402
from napari_dlbio.core.segmentation_config import SegmentationConfig  # noqa: E402
from napari_dlbio.models._tf import load_keras, load_tensorflow  # noqa: E402
from napari_dlbio.models.bioimageio_export import export_bioimageio  # noqa: E402
from napari_dlbio.models.segmentation import predict_segmentation, train_segmentation  # noqa: E402
from napari_dlbio.models.store import load_model_folder, save_model_folder  # noqa: E402

keras = load_keras()


pytestmark = pytest.mark.usefixtures("work_elsewhere")


def _member(package: Path, name: str) -> np.ndarray:
    with zipfile.ZipFile(package) as archive:
        return np.load(io.BytesIO(archive.read(name)))


def _foreign_package(folder: Path) -> Path:
    """A package written with bioimageio.spec's API, not by napari-dlbio's exporter: one
    convolution and a sigmoid; zero-mean / unit-variance and clip before, binarize after."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as spec

    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs)
    network = keras.Model(inputs, outputs)
    network.save(folder / "net.keras")
    rng = np.random.default_rng(5)
    test_input = rng.gamma(2.0, 40.0, size=(1, 64, 64, 1)).astype(np.float32)
    centred = (test_input - test_input.mean()) / (test_input.std() + 1e-6)
    raw = np.asarray(network(np.clip(centred, -1.5, 1.5).astype(np.float32)))
    np.save(folder / "in.npy", test_input)
    np.save(folder / "out.npy", (raw > 0.5).astype(np.float32))
    (folder / "README.md").write_text("# A test model\n", encoding="utf-8")
    yx = (spec.AxisId("y"), spec.AxisId("x"))
    descr = spec.ModelDescr(
        name="foreign test model",
        description="One convolution.",
        authors=[spec.Author(name="Test")],
        cite=[spec.CiteEntry(text="Nobody (2024)", doi="10.1234/abcd")],
        license="MIT",
        documentation=spec.FileDescr(source=folder / "README.md"),
        inputs=[
            spec.InputTensorDescr(
                id=spec.TensorId("raw"),
                axes=[
                    spec.BatchAxis(),
                    spec.SpaceInputAxis(
                        id=spec.AxisId("y"), size=spec.ParameterizedSize(min=8, step=8)
                    ),
                    spec.SpaceInputAxis(
                        id=spec.AxisId("x"), size=spec.ParameterizedSize(min=8, step=8)
                    ),
                    spec.ChannelAxis(channel_names=[spec.Identifier("grey")]),
                ],
                test_tensor=spec.FileDescr(source=folder / "in.npy"),
                preprocessing=[
                    spec.ZeroMeanUnitVarianceDescr(
                        kwargs=spec.ZeroMeanUnitVarianceKwargs(axes=(*yx, spec.AxisId("channel")))
                    ),
                    spec.ClipDescr(kwargs=spec.ClipKwargs(min=-1.5, max=1.5)),
                ],
            )
        ],
        outputs=[
            spec.OutputTensorDescr(
                id=spec.TensorId("cells"),
                axes=[
                    spec.BatchAxis(),
                    *(
                        spec.SpaceOutputAxis(
                            id=axis,
                            size=spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=axis),
                        )
                        for axis in yx
                    ),
                    spec.ChannelAxis(channel_names=[spec.Identifier("cell")]),
                ],
                test_tensor=spec.FileDescr(source=folder / "out.npy"),
                postprocessing=[spec.BinarizeDescr(kwargs=spec.BinarizeKwargs(threshold=0.5))],
            )
        ],
        weights=spec.WeightsDescr(
            keras_v3=spec.KerasV3WeightsDescr(
                source=folder / "net.keras",
                keras_version=keras.__version__,
                backend=("tensorflow", load_tensorflow().__version__),
            )
        ),
    )
    package = folder / "foreign.zip"
    save_bioimageio_package(descr, output_path=package)
    return package


@pytest.fixture(scope="module")
def foreign_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _foreign_package(tmp_path_factory.mktemp("foreign"))


def _edited(package: Path, out: Path, edit: Any, extra: dict[str, bytes] | None = None) -> Path:
    """A copy of ``package`` whose rdf.yaml is ``edit(rdf)``."""
    import yaml

    with zipfile.ZipFile(package) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "rdf.yaml":
                rdf = yaml.safe_load(data)
                edit(rdf)
                data = yaml.safe_dump(rdf).encode("utf-8")
            target.writestr(name, data)
        for name, data in (extra or {}).items():
            target.writestr(name, data)
    return out


def test_an_exported_builtin_predicts_the_mask_of_its_folder(em_package: Path) -> None:
    image = _member(em_package, "test_input.npy")[0, ..., 0]
    assert image.shape == (512, 512)
    imported = load_model_folder(em_package)
    assert imported.task is Task.SEGMENTATION
    assert imported.config == load_model_folder("builtin:em-membranes").config
    ours = predict_segmentation(imported, image).mask
    folder = predict_segmentation(load_model_folder("builtin:em-membranes"), image).mask
    assert np.mean(ours == folder) >= 0.999


def test_cli_predicts_with_a_package(em_package: Path, tmp_path: Path) -> None:
    image = _member(em_package, "test_input.npy")[0, :256, :256, 0]
    tifffile.imwrite(tmp_path / "slice.tif", image)
    out = tmp_path / "mask.tif"
    argv = ["predict", "--model", str(em_package), "--images", str(tmp_path / "slice.tif")]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    mask = tifffile.imread(out)
    assert mask.shape[-2:] == (256, 256)
    assert set(np.unique(mask)) <= {0, 1}


def test_a_foreign_package_predicts_as_bioimageio_core_does(foreign_package: Path) -> None:
    model = load_model_folder(foreign_package)
    config = model.config
    assert isinstance(config, SegmentationConfig)
    assert config.class_names == ("background", "cell")
    steps = config.input_processing or ()
    assert [step.kind for step in steps if step.kind is not StepKind.ENSURE_DTYPE] == [
        StepKind.ZERO_MEAN_UNIT_VARIANCE,
        StepKind.CLIP,
    ]
    test_input = _member(foreign_package, "in.npy")
    ours = predict_segmentation(model, test_input[0, ..., 0]).mask[0]
    sample = bioimageio_core.predict(model=foreign_package, inputs={"raw": test_input})
    theirs = np.asarray(sample.members["cells"].data)[0, ..., 0]
    np.testing.assert_array_equal(ours, theirs.astype(np.uint8))
    assert 0 < ours.sum() < ours.size


def test_an_imported_package_fine_tunes_and_saves_as_a_model_folder(
    foreign_package: Path, tmp_path: Path
) -> None:
    model = load_model_folder(foreign_package)
    rng = np.random.default_rng(0)
    images = rng.gamma(2.0, 40.0, size=(2, 64, 64)).astype(np.float32)
    annotations = np.where(images > 80, 2, 1).astype(np.uint8)
    settings = SegmentationConfig(
        epochs=1,
        steps_per_epoch=2,
        patch_size=32,
        batch_size=2,
        validation_fraction=0.0,
        augment_elastic=False,
        learning_rate_decay=False,
    )
    tuned = train_segmentation(images, annotations, settings, initial=model).model
    assert tuned.config.input_processing == model.config.input_processing
    folder = save_model_folder(tmp_path / "tuned", tuned.model, tuned.task, tuned.config)
    again = load_model_folder(folder)
    assert again.config == tuned.config
    np.testing.assert_array_equal(
        predict_segmentation(again, images).mask, predict_segmentation(tuned, images).mask
    )


def test_bad_packages_get_clear_messages(foreign_package: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.zip"
    data = foreign_package.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match="damaged"):
        load_model_folder(corrupt)

    def old_format(rdf: dict[str, Any]) -> None:
        rdf["format_version"] = "0.4.10"

    old = _edited(foreign_package, tmp_path / "old.zip", old_format)
    with pytest.raises(ModelFolderError, match=r"format 0\.4\.10"):
        load_model_folder(old)

    def torch_only(rdf: dict[str, Any]) -> None:
        rdf["weights"] = {
            "pytorch_state_dict": {
                "source": "net.keras",
                "architecture": {"callable": "UNet", "import_from": "somewhere"},
                "pytorch_version": "2.1",
            }
        }

    torch = _edited(foreign_package, tmp_path / "torch.zip", torch_only)
    with pytest.raises(ModelFolderError, match="pytorch_state_dict only"):
        load_model_folder(torch)

    def custom_code(rdf: dict[str, Any]) -> None:
        rdf["outputs"][0]["postprocessing"] = [
            {"id": "custom", "callable": "run", "source": "evil.py"}
        ]

    code = _edited(foreign_package, tmp_path / "code.zip", custom_code, {"evil.py": b"import os\n"})
    with pytest.raises(ModelFolderError, match="never runs code"):
        load_model_folder(code)

    def wrong_threshold(rdf: dict[str, Any]) -> None:
        rdf["outputs"][0]["postprocessing"][0]["kwargs"]["threshold"] = 2.0

    wrong = _edited(foreign_package, tmp_path / "wrong.zip", wrong_threshold)
    with pytest.raises(ModelFolderError, match="not reproduced"):
        load_model_folder(wrong)
    # Nothing of the user's was changed.
    assert foreign_package.read_bytes() == data


def test_a_foreign_network_is_not_exported_again_nor_corrected_in_bursts(
    foreign_package: Path, tmp_path: Path
) -> None:
    from napari_dlbio.models.interactive import FineTuner

    model = load_model_folder(foreign_package)
    with pytest.raises(ModelFolderError, match="share that package"):
        export_bioimageio(model, tmp_path / "again.zip")
    assert not (tmp_path / "again.zip").exists()
    with pytest.raises(ModelFolderError, match="Fine-tune it with Train"):
        FineTuner(SegmentationConfig(), model)
