"""``dlbio train|predict|evaluate`` for classifiers on real PlantVillage leaf photos."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_dlbio.cli import main

CLASSES = ("Pepper__bell___Bacterial_spot", "Potato___healthy", "Tomato__Tomato_mosaic_virus")
PER_CLASS = 10
TINY = {"input_size": 48, "filters": 8, "blocks": 3, "epochs": 15, "batch_size": 8, "seed": 1}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def leaf_folder(plantvillage_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 real classes x 10 photos, plus the kinds of files users' folders really contain."""
    root = tmp_path_factory.mktemp("leaves") / "my leaves"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for source in sorted((plantvillage_dir / name).glob("*.JPG"))[:PER_CLASS]:
            (root / name / source.name).write_bytes(source.read_bytes())
    healthy = root / "Potato___healthy"
    photo = iio.imread(next(healthy.glob("*.JPG")))
    iio.imwrite(healthy / "grey copy.png", photo.mean(axis=2).astype(np.uint8))
    alpha = np.full((*photo.shape[:2], 1), 255, np.uint8)
    iio.imwrite(healthy / "rgba copy.png", np.concatenate([photo, alpha], axis=2))
    iio.imwrite(healthy / "huge copy.png", np.kron(photo, np.ones((8, 6, 1), np.uint8)))
    (healthy / "notes.txt").write_text("field notes")
    (healthy / "broken.JPG").write_bytes(next(healthy.glob("*.JPG")).read_bytes()[:400])
    (root / "empty class").mkdir()
    return root


@pytest.fixture(scope="module")
def trained(leaf_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("cli")
    config = work / "settings.json"
    config.write_text(json.dumps(TINY))
    # Module-scoped fixtures cannot use capsys: capture the streams directly.
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            [
                "train",
                "--task",
                "classify",
                "--images",
                str(leaf_folder),
                "--out",
                str(work / "model"),
                "--config",
                str(config),
            ]
        )
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "model": work / "model"}


def test_train_saves_a_self_describing_model(trained: dict):
    assert trained["code"] == 0, trained["err"]
    assert trained["out"].startswith(f"Saved {trained['model']}")
    for skipped in ("notes.txt", "broken.JPG", "empty class"):
        assert skipped in trained["err"]
    document = json.loads((trained["model"] / "config.json").read_text())
    config = document["config"]
    assert document["task"] == "classification"
    assert tuple(config["class_names"]) == CLASSES
    assert config["input_size"] == 48
    assert len(config["channel_mean"]) == 3
    history = json.loads((trained["model"] / "history.json").read_text())
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)


def test_predict_writes_csv_and_cams_named_after_the_images(
    trained: dict, leaf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out, cams = tmp_path / "predictions.csv", tmp_path / "cams"

    code, stdout, stderr = _run(
        capsys, "predict", "--model", trained["model"], "--images", leaf_folder,
        "--out", out, "--cam", cams, "--quiet",
    )  # fmt: skip

    assert code == 0, stderr
    assert "broken.JPG" in stderr
    assert "notes.txt" in stderr
    with out.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 3 * PER_CLASS + 3
    assert set(rows[0]) == {"path", "predicted_class", "probability", "seen_in_training"}
    assert {row["predicted_class"] for row in rows} <= set(CLASSES)
    assert all(0.0 <= float(row["probability"]) <= 1.0 for row in rows)
    # The model trained on this folder, less the images it held out for validation.
    seen = [row for row in rows if row["seen_in_training"] == "True"]
    assert 0 < len(seen) < len(rows)
    for row in rows:
        image = Path(row["path"])
        cam = tifffile.imread(cams / image.relative_to(leaf_folder).with_suffix(".tif"))
        assert cam.dtype == np.float32
        assert cam.shape == iio.imread(image).shape[:2]
        assert cam.min() >= 0.0
        assert cam.max() <= 1.0
    assert f"Wrote {out}" in stdout


def test_evaluate_prints_one_json_object_and_learned_something(
    trained: dict, leaf_folder: Path, capsys: pytest.CaptureFixture[str]
):
    code, stdout, stderr = _run(
        capsys, "evaluate", "--model", trained["model"], "--images", leaf_folder, "--json"
    )

    assert code == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert set(report) >= {"accuracy", "classes", "confusion_matrix"}
    assert list(report["classes"]) == list(CLASSES)
    assert sum(figures["support"] for figures in report["classes"].values()) == 33
    assert np.array(report["confusion_matrix"]).shape == (3, 3)
    for figures in report["classes"].values():
        assert set(figures) == {"precision", "recall", "support"}
    # Three very different classes, mostly seen in training: far above chance (1/3).
    assert report["accuracy"] >= 0.6


def test_evaluate_skips_a_class_the_model_never_saw(
    trained: dict, leaf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    folder = tmp_path / "new season"
    for name in ("Potato___healthy", "Tomato_Leaf_Mold"):
        (folder / name).mkdir(parents=True)
    for photo in sorted((leaf_folder / "Potato___healthy").glob("*.JPG"))[:3]:
        (folder / "Potato___healthy" / photo.name).write_bytes(photo.read_bytes())
        (folder / "Tomato_Leaf_Mold" / photo.name).write_bytes(photo.read_bytes())

    code, stdout, stderr = _run(
        capsys, "evaluate", "--model", trained["model"], "--images", folder, "--json"
    )

    assert code == 0, stderr
    assert "Tomato_Leaf_Mold" in stderr
    assert "never learned" in stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["classes"]["Potato___healthy"]["support"] == 3


def test_train_from_a_model_of_other_classes_learns_the_folders_classes(
    trained: dict, plantvillage_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    folder = tmp_path / "my classes"
    new = ("Pepper__bell___healthy", "Potato___healthy", "Tomato_Leaf_Mold")
    for name in new:
        (folder / name).mkdir(parents=True)
        for photo in sorted((plantvillage_dir / name).glob("*.JPG"))[:6]:
            (folder / name / photo.name).write_bytes(photo.read_bytes())
    settings = tmp_path / "short.json"
    settings.write_text(json.dumps({"epochs": 1, "fine_tune_epochs": 1, "batch_size": 8}))
    model = tmp_path / "transferred"

    code, stdout, stderr = _run(
        capsys, "train", "--task", "classify", "--images", folder, "--from", trained["model"],
        "--config", settings, "--out", model,
    )  # fmt: skip

    assert code == 0, stderr
    assert stdout.startswith(f"Saved {model}")
    assert "classes the model never learned (Pepper__bell___healthy, Tomato_Leaf_Mold;" in stderr
    assert "a new top is trained for your 3 classes" in stderr
    assert "epoch 2/2" in stderr
    config = json.loads((model / "config.json").read_text())["config"]
    assert tuple(config["class_names"]) == new
    assert config["input_size"] == TINY["input_size"]


def test_single_class_folder_is_a_clear_error(
    leaf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    folder = tmp_path / "one"
    (folder / "Potato___healthy").mkdir(parents=True)
    for photo in sorted((leaf_folder / "Potato___healthy").glob("*.JPG"))[:3]:
        (folder / "Potato___healthy" / photo.name).write_bytes(photo.read_bytes())

    code, stdout, stderr = _run(
        capsys, "train", "--task", "classify", "--images", folder, "--out", tmp_path / "m"
    )

    assert code == 2
    assert stderr.startswith("dlbio: error:")
    assert "two classes" in stderr
    assert stdout == ""
    assert not (tmp_path / "m").exists()


def test_bad_requests_are_clear_errors(
    trained: dict, leaf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    existing = tmp_path / "taken.csv"
    existing.write_text("keep me")
    bad_config = tmp_path / "bad.json"
    bad_config.write_text(json.dumps({"input_size": 48, "dropout": 1.5}))
    requests = [
        (("predict", "--model", trained["model"], "--images", leaf_folder, "--out", existing),
         "already exists"),
        (("predict", "--model", trained["model"], "--images", tmp_path / "nowhere",
          "--out", tmp_path / "p.csv"), "does not exist"),
        (("evaluate", "--model", tmp_path / "no model", "--images", leaf_folder),
         "not a napari-dlbio model folder"),
        (("predict", "--model", trained["model"], "--images", leaf_folder,
          "--out", tmp_path / "q.csv", "--min-region-pixels", "50"), "for segmentation models"),
        (("train", "--task", "classify", "--images", leaf_folder, "--out", tmp_path / "m",
          "--config", bad_config), "dropout"),
    ]  # fmt: skip
    for argv, message in requests:
        code, _, stderr = _run(capsys, *argv)
        assert code == 2, argv
        assert message in stderr, stderr
    assert existing.read_text() == "keep me"


@pytest.mark.slow  # tracing the unfrozen MobileNetV2's gradients takes about a minute on CPU
def test_transfer_learning_from_a_local_weights_file(
    leaf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from napari_dlbio.models._tf import load_keras

    keras = load_keras()
    weights = tmp_path / "mobilenet v2.weights.h5"
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    backbone.save_weights(weights)
    config = tmp_path / "transfer.json"
    settings = {"backbone": "MobileNetV2", "input_size": 32, "epochs": 1, "fine_tune_epochs": 1}
    config.write_text(json.dumps({**settings, "batch_size": 16}))
    model = tmp_path / "model"
    argv = ("train", "--task", "classify", "--images", leaf_folder, "--out", model,
            "--config", config, "--weights", weights)  # fmt: skip

    code, _, stderr = _run(capsys, *argv)

    assert code == 0, stderr
    assert "Fine-tuning the whole MobileNetV2" in stderr
    assert "epoch 2/2" in stderr
    saved = json.loads((model / "config.json").read_text())["config"]
    assert saved["backbone"] == "MobileNetV2"
    assert saved["normalisation"] == "scale to [-1, 1]"
    code, _, stderr = _run(
        capsys, "evaluate", "--model", model, "--images", leaf_folder, "--json", "--quiet"
    )
    assert code == 0, stderr
