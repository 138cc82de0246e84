"""``dlbio train|predict|evaluate`` on small crops of the ISBI 2012 data."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_dlbio.cli import build_parser, main

ISBI = "255=background,0=membrane"
# TensorFlow's C++ log lines: absl's "I0000 00:00:17964.51   7672 port.cc:153] ...",
# TensorFlow's own "2025-01-31 12:00:00.1: E tensorflow/...:52] ...", and what they say.
TF_LOG = re.compile(
    r"^[IWEF]\d{4} |^\d{4}-\d\d-\d\d .*: [IWEF] \S+:\d+\] |cuInit|absl::InitializeLog|oneDNN",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def model_dir(isbi_crops, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "membrane"
    code = main(
        [
            "train",
            "--images",
            str(isbi_crops["train"]),
            "--labels",
            str(isbi_crops["train_labels"]),
            "--label-values",
            ISBI,
            "--config",
            str(isbi_crops["config"]),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_train_says_why_training_stopped(isbi_crops, tmp_path, capsys):
    argv = ["train", "--images", isbi_crops["train"], "--labels", isbi_crops["train_labels"]]
    argv += ["--label-values", ISBI, "--config", isbi_crops["config"], "--epochs", "1"]
    assert main([*map(str, argv), "--out", str(tmp_path / "model"), "--quiet"]) == 0
    assert re.search(
        r"^Saved .*model \(best epoch 1.*; all epochs done\)\.$", capsys.readouterr().out
    )


def test_train_writes_a_complete_model_folder(model_dir):
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "config.json",
        "history.json",
        "metrics.json",
        "model.keras",
    ]
    document = json.loads((model_dir / "config.json").read_text())
    assert document["task"] == "segmentation"
    assert document["config"]["class_names"] == ["background", "membrane"]
    assert document["config"]["patch_size"] == 64
    assert not list(model_dir.parent.glob(".membrane*"))


def test_predict_writes_mask_and_probabilities(isbi_crops, model_dir, tmp_path, capsys):
    mask_path, probabilities_path = tmp_path / "mask.tif", tmp_path / "p.tif"
    argv = ["predict", "--model", str(model_dir), "--images", str(isbi_crops["test_slices"])]
    argv += ["--out", str(mask_path), "--probabilities", str(probabilities_path), "--quiet"]
    assert main(argv) == 0
    mask = tifffile.imread(mask_path)
    assert mask.shape == (5, 96, 128)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    probabilities = tifffile.imread(probabilities_path)
    assert probabilities.shape == (5, 2, 96, 128)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert "Wrote" in capsys.readouterr().out


def test_a_grey_stack_saved_as_rgb_gives_the_grey_stacks_mask(isbi_crops, model_dir, tmp_path):
    rgb = tmp_path / "rgb.tif"
    volume = tifffile.imread(isbi_crops["test"])
    tifffile.imwrite(rgb, np.repeat(volume[..., np.newaxis], 3, axis=-1), photometric="rgb")
    masks = []
    for images in (isbi_crops["test"], rgb):
        out = tmp_path / f"mask of {images.stem}.tif"
        argv = ["predict", "--model", str(model_dir), "--images", str(images)]
        assert main([*argv, "--out", str(out), "--quiet"]) == 0
        masks.append(tifffile.imread(out))
    np.testing.assert_array_equal(masks[1], masks[0])


@pytest.mark.parametrize(
    ("colour", "settings", "channels"),
    [("grey", False, 1), ("grey saved as RGB", False, 1), ("RGB", False, 3), ("RGB", True, 3)],
)
def test_a_new_model_takes_the_channels_of_its_images(
    colour, settings, channels, tiny_training, tmp_path, monkeypatch, capsys
):
    from napari_dlbio.core.errors import InputDataError
    from napari_dlbio.models import segmentation

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (2, 64, 64), dtype=np.uint8)
    data = {
        "grey": volume,
        "grey saved as RGB": np.repeat(volume[..., np.newaxis], 3, axis=-1),
        "RGB": rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8),
    }[colour]
    images, labels, config = tmp_path / "images.tif", tmp_path / "labels.tif", tmp_path / "c.json"
    tifffile.imwrite(images, data, photometric="rgb" if data.ndim == 4 else "minisblack")
    tifffile.imwrite(labels, np.where(volume > 100, 255, 0).astype(np.uint8))
    config.write_text(json.dumps(tiny_training))
    seen = []

    def training(images, annotations, config, **kwargs):
        seen.append(config.input_channels)
        raise InputDataError("stopped by the test")

    monkeypatch.setattr(segmentation, "iter_train_segmentation", training)
    argv = ["train", "--images", str(images), "--labels", str(labels), "--label-values", ISBI]
    argv += ["--out", str(tmp_path / "model"), *(["--config", str(config)] if settings else [])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "stopped by the test" in err
    assert seen == [channels]
    # The settings (1 channel, by default) are overruled aloud.
    assert ("The new model takes 3 channel(s)" in err) == settings


def run_dlbio(*argv: object) -> subprocess.CompletedProcess[str]:
    """``dlbio ARGV`` in a fresh interpreter, TensorFlow's log level left to napari-dlbio."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    command = "import sys; from napari_dlbio.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", command, *map(str, argv)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip


def test_tensorflows_log_lines_reach_stderr_only_with_verbose(isbi_crops, model_dir, tmp_path):
    model = ["--model", model_dir, "--images", isbi_crops["test"]]
    quiet = run_dlbio(
        "evaluate", *model, "--labels", isbi_crops["test_labels"], "--label-values", ISBI
    )
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert not TF_LOG.findall(quiet.stderr), quiet.stderr
    assert "done after" in quiet.stderr  # our own progress still gets through
    assert re.search(r"^membrane +\d\.\d{4} +\d\.\d{4} +\d+$", quiet.stdout, re.MULTILINE)

    verbose = run_dlbio("--verbose", "predict", *model, "--out", tmp_path / "verbose.tif")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert (tmp_path / "verbose.tif").is_file()
    if sys.platform.startswith("linux") and platform.machine() == "x86_64":
        # TensorFlow 2.21 there always logs at start-up (oneDNN, then CUDA or GPU devices).
        assert TF_LOG.findall(verbose.stderr), verbose.stderr


def test_verbose_goes_before_or_after_the_command():
    predict = ["predict", "--model", "m", "--images", "a.tif", "b.tif", "--out", "mask.tif"]
    parser = build_parser()
    assert parser.parse_args(["--verbose", *predict]).verbose
    assert parser.parse_args([*predict, "--verbose"]).verbose
    assert not parser.parse_args(predict).verbose


def test_min_region_pixels_overrides_the_models_speck_setting(
    isbi_crops, model_dir, tmp_path, capsys
):
    from skimage.measure import label

    masks = {}
    for size in ("0", "40"):
        mask_path = tmp_path / f"mask{size}.tif"
        argv = ["predict", "--model", str(model_dir), "--images", str(isbi_crops["test_slices"])]
        assert main([*argv, "--out", str(mask_path), "--min-region-pixels", size, "--quiet"]) == 0
        masks[size] = tifffile.imread(mask_path)
    regions = [np.bincount(label(plane, connectivity=1).ravel())[1:] for plane in masks["40"]]
    assert min(sizes.min(initial=40) for sizes in regions) >= 40
    assert np.all(masks["40"] <= masks["0"])
    assert np.count_nonzero(masks["40"]) < np.count_nonzero(masks["0"])

    argv = ["evaluate", "--model", str(model_dir), "--images", str(isbi_crops["test"])]
    argv += ["--labels", str(isbi_crops["test_labels"]), "--label-values", ISBI]
    assert main([*argv, "--min-region-pixels", "-1"]) == 2
    assert "smallest region kept must be 0 pixels or more" in capsys.readouterr().err


def test_evaluate_prints_one_json_object_of_the_documented_shape(isbi_crops, model_dir, capsys):
    argv = ["evaluate", "--model", str(model_dir), "--images", str(isbi_crops["test"])]
    argv += ["--labels", str(isbi_crops["test_labels"]), "--label-values", ISBI, "--json"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert isinstance(report["pixel_accuracy"], float)
    assert set(report["classes"]) == {"background", "membrane"}
    for figures in report["classes"].values():
        assert set(figures) >= {"iou", "dice", "pixels"}
    assert report["classes"]["membrane"]["pixels"] == int(
        (tifffile.imread(isbi_crops["test_labels"]) == 0).sum()
    )
    assert len(report["slices"]) == 5


def test_fine_tuning_continues_from_a_model_folder(
    isbi_crops, model_dir, tiny_training, tmp_path, capsys
):
    out = tmp_path / "tuned"
    argv = [
        "train",
        "--images",
        str(isbi_crops["test"]),
        "--labels",
        str(isbi_crops["test_labels"]),
    ]
    argv += ["--label-values", ISBI, "--from", str(model_dir), "--epochs", "1", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    tuned = json.loads((out / "config.json").read_text())["config"]
    assert tuned["epochs"] == 1
    expected = {"batch_norm": True, "dropout": 0.0, "l2": 0.0, "stem_stride": 2}
    assert tuned["network"] == tiny_training["network"] | expected
    assert "Saved" in capsys.readouterr().out


def test_bad_input_exits_2_with_one_clear_line_and_no_traceback(
    isbi_crops, model_dir, tmp_path, capsys
):
    nan_image = tmp_path / "nan.tif"
    tifffile.imwrite(nan_image, np.full((5, 96, 128), np.nan, np.float32))
    short_labels = tmp_path / "short.tif"
    tifffile.imwrite(
        short_labels, tifffile.imread(isbi_crops["train_labels"])[:3], photometric="minisblack"
    )
    occupied = tmp_path / "exists.tif"
    occupied.write_bytes(b"")
    out = tmp_path / "m"
    train = ["train", "--images", str(isbi_crops["train"]), "--out", str(out), "--quiet"]
    train += ["--config", str(isbi_crops["config"])]
    labels = ["--labels", str(isbi_crops["train_labels"])]
    model = ["--model", str(model_dir), "--images", str(isbi_crops["test"])]
    cases = [
        ([*train[:6], *labels, "--label-values", "255=background"], "names only the class"),
        ([*train, *labels, "--label-values", "255=background"], "0 that have no class"),
        ([*train, *labels, "--label-values", "0=membrane,7=background"], "have no class"),
        ([*train, *labels], "only 2 classes"),
        (train, "needs --labels"),
        ([*train, "--labels", str(short_labels), "--label-values", ISBI], "shape"),
        ([*train, *labels, "--label-values", ISBI, "--images", str(nan_image)], "NaN"),
        ([*train, *labels, "--label-values", ISBI, "--from", str(tmp_path)], "config.json"),
        (["predict", *model, "--out", str(occupied)], "already exists"),
        (["predict", *model, "--out", str(tmp_path / "c.tif"), "--cam", "cams"], "for classif"),
        (["evaluate", *model, "--labels", str(isbi_crops["train_labels"])], "model knows only"),
        (["predict", "--model", str(tmp_path), "--images", "x.tif", "--out", "y.tif"], "model"),
    ]
    for argv, words in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert "Traceback" not in err
        message = [line for line in err.splitlines() if line.startswith("dlbio: error:")]
        assert len(message) == 1, err
        assert words in message[0], (words, message[0])
    assert not out.exists()


def test_progress_printer_writes_whole_lines_to_a_log_file():
    import io

    from napari_dlbio.cli._progress import ProgressPrinter
    from napari_dlbio.core.events import (
        BatchEnded,
        EpochEnded,
        Finished,
        Notice,
        RunState,
        TrainingStarted,
    )

    log = io.StringIO()
    printer = ProgressPrinter(log)
    for event in (
        TrainingStarted(2, 3, "CPU (2 cores)"),
        BatchEnded(1, 1, 3, 0.7),
        EpochEnded(1, 2, 0.65, {"val_iou": 0.5}),
        Notice("stopping"),
        Finished(RunState.CANCELLED),
    ):
        printer(event)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("Training on CPU (2 cores): up to 2 epochs of 3 steps")
    assert lines[1].startswith("epoch 1/2  loss 0.6500  val_iou 0.5000")
    assert lines[2] == "stopping"
    assert lines[3].startswith("cancelled after")
    assert "\r" not in log.getvalue()
    quiet = io.StringIO()
    ProgressPrinter(quiet, quiet=True)(EpochEnded(1, 2, 0.65))
    assert quiet.getvalue() == ""
