"""Faults while training and writing: nothing is lost, nothing half-written replaces a file.

Injected: SIGKILL of a training process, an exception inside a Keras callback, a full disk
or a permission error at each step of saving a model folder, writing a mask (TIFF and PNG
slices) and writing the CLI's outputs.  After every fault the files that existed before are
byte for byte the same and loadable, and no partial file or folder is left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_dlbio.cli import main
from napari_dlbio.core import io
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import DlbioError, ModelFolderError


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _visible(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def _sample_crops(folder: Path) -> tuple[Path, Path]:
    from napari_dlbio._sample_data import make_isbi_sample

    (image, _, _), (annotation, _, _) = make_isbi_sample()
    images = folder / "em crop.tif"
    labels = folder / "em annotation.tif"
    tifffile.imwrite(images, image[:3, :96, :96], photometric="minisblack")
    tifffile.imwrite(labels, annotation[:3, :96, :96], photometric="minisblack")
    return images, labels


def test_a_killed_training_run_leaves_the_previous_model_intact(model_folders, tmp_path, tree):
    work = tmp_path / "my work"
    work.mkdir()
    images, labels = _sample_crops(work)
    config = work / "settings.json"
    config.write_text(
        '{"network": {"depth": 2, "base_filters": 4}, "patch_size": 32, "batch_size": 2, '
        '"epochs": 10000, "steps_per_epoch": 2, "validation_fraction": 0.0, '
        '"early_stopping_patience": null, "tile_size": 32, "tile_overlap": 8}'
    )
    out = work / "membrane model"
    shutil.copytree(model_folders["segmentation"], out)
    before = tree(out)
    program = "import sys; from napari_dlbio.cli import main; sys.exit(main())"
    argv = ["train", "--images", str(images), "--labels", str(labels), "--config", str(config)]
    process = subprocess.Popen(
        [sys.executable, "-c", program, *argv, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    try:
        while not any(line.startswith("epoch 1/") for line in lines):
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "no epoch finished in time:\n" + "".join(lines)
            time.sleep(0.05)
        # Now in the second epoch (of 10000): checkpoints exist, no save has begun.
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)

    assert process.returncode == -signal.SIGKILL
    assert tree(out) == before
    assert _visible(work) == ["em annotation.tif", "em crop.tif", "membrane model", "settings.json"]
    leftovers = [path.name for path in work.iterdir() if path.name.startswith(".")]
    assert leftovers == [".membrane model.checkpoints"], leftovers
    from napari_dlbio.models.store import load_model_folder

    assert load_model_folder(out, Task.SEGMENTATION).config.tile_size == 32


# An error in on_train_batch_end is tested in tests/models/test_training.py.
@pytest.mark.parametrize("hook", ["on_train_begin", "on_epoch_end"])
def test_an_error_in_a_keras_callback_ends_training_and_writes_nothing(
    hook, tiny_segmentation_config, tmp_path
):
    from napari_dlbio.models._tf import load_keras
    from napari_dlbio.models.segmentation import iter_train_segmentation

    keras = load_keras()

    class Broken(keras.callbacks.Callback):
        pass

    setattr(Broken, hook, lambda self, *args, **kwargs: _disk_full())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 64, 64), dtype=np.uint8)
    annotation = np.where(images > 128, 2, 1).astype(np.uint8)
    checkpoints = tmp_path / "checkpoints"
    job = iter_train_segmentation(
        images, annotation, tiny_segmentation_config, checkpoint_dir=checkpoints,
        callbacks=[Broken()],
    )  # fmt: skip
    with pytest.raises(OSError, match="No space left on device"):
        for _ in job:
            pass
    assert not [thread for thread in threading.enumerate() if thread.name == "dlbio-fit"]
    assert list(checkpoints.iterdir()) == []
    np.testing.assert_array_equal(annotation, np.where(images > 128, 2, 1))


@pytest.fixture
def previous_model(model_folders, tmp_path) -> Path:
    folder = tmp_path / "models" / "membrane model"
    shutil.copytree(model_folders["segmentation"], folder)
    return folder


def _fail_on_call(number: int, real):
    calls = []

    def fake(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    return fake


def _fault(point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_dlbio.models import store
    from napari_dlbio.models._tf import load_keras

    keras = load_keras()
    if point == "model file":
        monkeypatch.setattr(keras.Model, "save", _disk_full)
    elif point == "history file":
        monkeypatch.setattr(store, "_write_json", _fail_on_call(2, store._write_json))
    elif point == "staging folder":

        def refused(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(store.tempfile, "mkdtemp", refused)
    elif point == "rename into place":
        # The old folder is moved aside (first rename), then the new one fails to move in.
        monkeypatch.setattr(Path, "rename", _fail_on_call(2, Path.rename))


@pytest.mark.parametrize(
    "point", ["model file", "history file", "staging folder", "rename into place"]
)
def test_a_failed_save_keeps_the_previous_model_folder(
    point, previous_model, model_folders, tree, monkeypatch
):
    from napari_dlbio.models.store import load_model_folder, save_model_folder

    new = load_model_folder(model_folders["classification"])
    parent = previous_model.parent
    before = tree(parent)
    with monkeypatch.context() as patch:
        _fault(point, patch)
        with pytest.raises(ModelFolderError, match=r"space left|Permission denied") as caught:
            save_model_folder(previous_model, new.model, new.task, new.config)
    assert str(parent) in str(caught.value)
    assert tree(parent) == before
    assert load_model_folder(previous_model).task is Task.SEGMENTATION
    # Without the fault the same save replaces the folder: the fault was what stopped it.
    save_model_folder(previous_model, new.model, new.task, new.config)
    assert load_model_folder(previous_model).task is Task.CLASSIFICATION
    assert [path.name for path in parent.iterdir()] == ["membrane model"]


def _half_written_tiff(path, *args, **kwargs):
    Path(path).write_bytes(b"II*\x00" + b"\x00" * 100)
    raise OSError(errno.ENOSPC, "No space left on device")


def _failed_rename(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied")


@pytest.mark.parametrize("fault", ["disk full while writing", "rename refused"])
@pytest.mark.parametrize("writer", ["tiff", "png slices"])
def test_a_failed_mask_export_leaves_nothing_and_keeps_other_files(
    writer, fault, tmp_path, tree, monkeypatch
):
    folder = tmp_path / "exports"
    folder.mkdir()
    earlier = io.write_labels_tiff(folder / "earlier mask.tif", np.ones((2, 8, 8), np.uint8))
    before = tree(folder)
    labels = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8) % 4
    with monkeypatch.context() as patch:
        if fault == "rename refused":
            patch.setattr(os, "replace", _failed_rename)
            patch.setattr(os, "rename", _failed_rename)
        elif writer == "tiff":
            patch.setattr(tifffile, "imwrite", _half_written_tiff)
        else:
            patch.setattr(io.iio, "imwrite", _fail_on_call(2, io.iio.imwrite))
        write = (
            (lambda: io.write_labels_tiff(folder / "mask.tif", labels))
            if writer == "tiff"
            else (lambda: io.write_labels_pngs(folder / "mask", labels))
        )
        with pytest.raises(DlbioError, match=r"space left|Permission denied") as caught:
            write()
    assert isinstance(caught.value, OSError)
    assert "Nothing was written" in str(caught.value)
    assert tree(folder) == before
    np.testing.assert_array_equal(io.read_stack(earlier).data, np.ones((2, 8, 8)))


def test_a_full_disk_during_cli_prediction_leaves_no_mask_and_no_probabilities(
    model_folders, tmp_path, tree, monkeypatch, capsys
):
    work = tmp_path / "my work"
    work.mkdir()
    images, _ = _sample_crops(work)
    (work / "earlier mask.tif").write_bytes(b"precious")
    before = tree(work)
    real = tifffile.imwrite

    def full_after_first_page(path, data=None, *args, **kwargs):
        if kwargs.get("shape") is not None:  # the mask, written page by page
            pages = iter(data)
            next(pages)
            Path(path).write_bytes(b"II*\x00 first page only")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", full_after_first_page)
    argv = ["predict", "--model", str(model_folders["segmentation"]), "--images", str(images)]
    argv += ["--out", str(work / "mask.tif"), "--probabilities", str(work / "p.tif"), "--quiet"]

    code = main(argv)

    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("dlbio: error: Could not write")
    assert "No space left on device" in err
    assert "Traceback" not in err
    assert tree(work) == before


def test_a_full_disk_while_writing_class_activation_maps_keeps_what_was_complete(
    model_folders, tmp_path, monkeypatch, capsys
):
    import imageio.v3 as iio

    work = tmp_path / "my work"
    photos = work / "photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(3):
        iio.imwrite(photos / f"leaf {index}.png", rng.integers(0, 255, (40, 40, 3), np.uint8))
    cams = work / "cams"
    monkeypatch.setattr(tifffile, "imwrite", _fail_on_call(2, tifffile.imwrite))
    argv = ["predict", "--model", str(model_folders["classification"]), "--images", str(photos)]
    argv += ["--out", str(work / "classes.csv"), "--cam", str(cams), "--quiet"]

    code = main(argv)

    err = capsys.readouterr().err
    assert code == 2, err
    assert "Could not write" in err
    assert "Traceback" not in err
    # The table and the first map are complete; the failed map left no partial file.
    assert sorted(path.name for path in cams.iterdir()) == ["leaf 0.tif"]
    assert tifffile.imread(cams / "leaf 0.tif").shape == (40, 40)
    assert (work / "classes.csv").read_text().count("\n") == 4
