"""The data of a bioimage.io package: its tensors with their test files, and its weights.

Weights, each checked to run in ``bioimageio.core`` 0.11 (``bioimageio.spec`` 0.5.12,
TensorFlow 2.21, Keras 3.15): ``keras_v3`` (the model folder's own ``.keras`` file),
``keras_hdf5`` (a legacy ``.h5`` file saved from it) and ``tensorflow_saved_model_bundle``
(a zipped SavedModel whose ``serve`` endpoint returns a dict, which ``bioimageio.core``'s
TensorFlow 2 adapter requires: Keras' ``model.export`` returns a bare tensor there).
``spec`` is ``bioimageio.spec``'s model format 0.5 module, passed in by the caller.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio.core.bioimageio_text import channel_names
from napari_dlbio.models._tf import load_keras, load_tensorflow
from napari_dlbio.models.store import MODEL_FILE, ModelFolder

keras = load_keras()


def describe_image_input(
    spec: Any, folder: Path, test_input: np.ndarray, size: Any, **fields: Any
) -> Any:
    """Describe the input tensor ``image`` (batch, y, x, channel) of sides ``size`` and
    write its test tensors; ``fields`` holds its description, data and any pre-processing."""
    channels = test_input.shape[-1]
    return spec.InputTensorDescr(
        id=spec.TensorId("image"),
        axes=[
            spec.BatchAxis(),
            spec.SpaceInputAxis(id=spec.AxisId("y"), size=size),
            spec.SpaceInputAxis(id=spec.AxisId("x"), size=size),
            spec.ChannelAxis(channel_names=channel_names(channels)),
        ],
        **_write_test_tensors(spec, folder, "input", test_input, rgb=channels == 3),
        **fields,
    )


def describe_probabilities(
    spec: Any, folder: Path, output: np.ndarray, tensor_id: str, description: str, axes: list[Any]
) -> Any:
    """Describe an output tensor of probabilities (0-1) and write its test tensors."""
    return spec.OutputTensorDescr(
        id=spec.TensorId(tensor_id),
        description=description,
        axes=axes,
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        **_write_test_tensors(spec, folder, "output", output),
    )


def _write_test_tensors(
    spec: Any, folder: Path, name: str, tensor: np.ndarray, rgb: bool = False
) -> dict[str, Any]:
    """The test tensor (``.npy``) and the same as a sample that image viewers open (TIFF)."""
    import tifffile

    np.save(folder / f"test_{name}.npy", tensor)
    # TIFF holds images of two axes at least; the format squeezes axes of length 1 away.
    sample = np.atleast_2d(np.squeeze(tensor[0]))
    photometric = "rgb" if rgb else "minisblack"
    tifffile.imwrite(folder / f"sample_{name}.tif", sample, photometric=photometric)
    return {
        "test_tensor": spec.FileDescr(source=folder / f"test_{name}.npy"),
        "sample_tensor": spec.FileDescr(source=folder / f"sample_{name}.tif"),
    }


def write_weights(spec: Any, model: ModelFolder, folder: Path) -> Any:
    """Write the Keras v3 file (the original), an HDF5 copy and a zipped SavedModel into
    ``folder``; return their weights description."""
    tf = load_tensorflow()
    native = folder / "model.keras"
    if model.path is not None and (model.path / MODEL_FILE).is_file():
        shutil.copyfile(model.path / MODEL_FILE, native)
    else:
        model.model.save(native)
    h5 = folder / "model.h5"
    # Keras logs that HDF5 is a legacy format; writing it is the point here.
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        model.model.save(h5)
    finally:
        absl.setLevel(level)
    bundle = _saved_model_zip(model.model, folder)
    return spec.WeightsDescr(
        keras_v3=spec.KerasV3WeightsDescr(
            source=native,
            keras_version=keras.__version__,
            backend=("tensorflow", tf.__version__),
        ),
        keras_hdf5=spec.KerasHdf5WeightsDescr(
            source=h5, tensorflow_version=tf.__version__, parent="keras_v3"
        ),
        tensorflow_saved_model_bundle=spec.TensorflowSavedModelBundleWeightsDescr(
            source=bundle, tensorflow_version=tf.__version__, parent="keras_v3"
        ),
    )


def _saved_model_zip(network: Any, folder: Path) -> Path:
    """A SavedModel whose ``serve`` endpoint maps the input to ``{output id: tensor}``."""
    output_id = "probabilities" if len(network.output.shape) == 4 else "class_probabilities"
    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint(
        name="serve",
        fn=lambda x: {output_id: network(x, training=False)},
        input_signature=[keras.InputSpec(shape=network.input.shape, dtype="float32")],
    )
    saved = folder / "saved_model"
    # Keras prints the endpoint's signature to standard output.
    with contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(str(saved))
    bundle = Path(shutil.make_archive(str(folder / "tf_saved_model"), "zip", root_dir=saved))
    shutil.rmtree(saved)
    return bundle
