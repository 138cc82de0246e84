"""``dlbio train|predict|evaluate`` of both tasks with bad files, folders and settings.

Every case must exit with code 2 and one line ``dlbio: error: ...`` that says what is
wrong, print no traceback and nothing on standard output, and leave every file as it was
(the work folder and the model folders are compared byte for byte before and after).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_dlbio.cli import main

ISBI = "255=background,0=membrane"
TINY_UNET = {
    "network": {"depth": 2, "base_filters": 4},
    "patch_size": 32,
    "batch_size": 2,
    "epochs": 1,
    "steps_per_epoch": 1,
    "validation_fraction": 0.0,
    "tile_size": 32,
    "tile_overlap": 8,
}
TINY_CNN = {"input_size": 32, "filters": 4, "blocks": 2, "epochs": 1, "batch_size": 4}


def _tif(path: Path, data: np.ndarray, photometric: str = "minisblack") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, photometric=photometric)
    return path


def _colour(volume: np.ndarray, last_only: bool = False) -> np.ndarray:
    """RGB slices of ``volume``: in colour, or grey (equal channels) but for the last."""
    rgb = np.repeat(volume[..., np.newaxis], 3, axis=-1)
    rgb[-1 if last_only else slice(None), ..., 0] //= 2
    return rgb


def _json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def work(tmp_path, model_folders, bad_file) -> dict[str, Path]:
    """Good and bad inputs in a folder with spaces in its name, plus the model folders."""
    root = tmp_path / "my work"
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
    labels = np.where(volume > 100, 255, 0).astype(np.uint8)
    paths = {
        "root": root,
        "images": _tif(root / "em stack.tif", volume),
        "labels": _tif(root / "em labels.tif", labels),
        "narrow labels": _tif(root / "narrow.tif", labels[:, :, :32]),
        "float labels": _tif(root / "float labels.tif", labels.astype(np.float32)),
        "colour labels": _tif(root / "rgb labels.tif", np.stack([labels] * 3, -1), "rgb"),
        "no annotation": _tif(root / "blank.tif", np.zeros_like(labels)),
        "many classes": _tif(root / "many.tif", np.full_like(labels, 9)),
        "nan images": _tif(root / "nan.tif", np.full(volume.shape, np.nan, np.float32)),
        "colour images": _tif(root / "leaf.tif", _colour(volume), "rgb"),
        # Grey saved as RGB, but the last slice is in colour: found as the stack streams.
        "colour last slice": _tif(root / "rgb em.tif", _colour(volume, last_only=True), "rgb"),
        "seg model": model_folders["segmentation"],
        "cls model": model_folders["classification"],
    }
    bad = root / "bad files"
    bad.mkdir()
    for kind in (
        "zero-byte tif",
        "garbage tif",
        "truncated tif",
        "huge tif, data missing",
        "huge tif, 1000 pages",
        "complex tif",
        "5D tif",
    ):
        made = bad_file(kind, bad)
        paths[kind] = made.rename(bad / f"{kind}{made.suffix}")
    paths["missing"] = root / "absent.tif"
    # Class folders: a good one, one class only, broken files only, no classes the model knows.
    for name in ("healthy", "blight"):
        for index in range(3):
            photo = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            folder = root / "leaves" / name
            folder.mkdir(parents=True, exist_ok=True)
            iio.imwrite(folder / f"leaf {index}.png", photo)
            other = root / "other leaves" / ("rust" if name == "healthy" else "mould")
            other.mkdir(parents=True, exist_ok=True)
            iio.imwrite(other / f"leaf {index}.png", photo)
            broken = root / "broken leaves" / name
            broken.mkdir(parents=True, exist_ok=True)
            (broken / f"leaf {index}.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * index)
    (root / "one class" / "healthy").mkdir(parents=True)
    iio.imwrite(root / "one class" / "healthy" / "leaf.png", photo)
    (root / "empty").mkdir()
    (root / "no images").mkdir()
    (root / "no images" / "notes.txt").write_text("field notes")
    paths.update(
        {
            "leaves": root / "leaves",
            "other leaves": root / "other leaves",
            "broken leaves": root / "broken leaves",
            "one class": root / "one class",
            "empty": root / "empty",
            "no images": root / "no images",
            "taken": root / "taken.tif",
            "taken csv": root / "taken.csv",
            "a file": root / "notes.txt",
            "occupied": root / "my results",
        }
    )
    paths["taken"].write_bytes(b"precious")
    paths["taken csv"].write_text("precious")
    paths["a file"].write_text("not a folder")
    paths["occupied"].mkdir()
    (paths["occupied"] / "thesis.docx").write_bytes(b"precious")
    configs = root / "settings"
    configs.mkdir()
    paths.update(
        {
            "unet settings": _json(configs / "unet.json", TINY_UNET),
            "cnn settings": _json(configs / "cnn.json", TINY_CNN),
            "invalid json": configs / "invalid.json",
            "unknown key": _json(configs / "unknown.json", {**TINY_UNET, "tile_szie": 64}),
            "wrong type": _json(configs / "type.json", {**TINY_UNET, "epochs": "ten"}),
            "huge patch": _json(configs / "patch.json", {**TINY_UNET, "patch_size": 10**9}),
            "huge unet": _json(
                configs / "unet8.json",
                {**TINY_UNET, "network": {"depth": 8, "base_filters": 512}},
            ),
            "not utf-8": configs / "latin1.json",
            "deep json": configs / "deep.json",
            "long number": configs / "number.json",
            "huge cnn": _json(configs / "cnn big.json", {**TINY_CNN, "input_size": 10**6}),
            "cnn unknown": _json(configs / "cnn unknown.json", {**TINY_CNN, "layers": 99}),
            "nan budget": configs / "nan.json",
        }
    )
    paths["invalid json"].write_text("{epochs: 3,")
    paths["not utf-8"].write_bytes('{"class_names": ["caf\u00e9", "b"]}'.encode("latin-1"))
    paths["deep json"].write_text("[" * 100_000 + "]" * 100_000)
    paths["long number"].write_text('{"epochs": ' + "9" * 5000 + "}")
    paths["nan budget"].write_text(json.dumps(TINY_UNET)[:-1] + ', "time_budget_s": NaN}')
    # Broken model folders.
    for name, edit in {
        "no config": lambda folder: (folder / "config.json").unlink(),
        "empty model file": lambda folder: (folder / "model.keras").write_bytes(b""),
        "config not json": lambda folder: (folder / "config.json").write_text("{"),
        "config not utf-8": lambda folder: (folder / "config.json").write_bytes(b"\xff\xfe{"),
        "config unknown key": lambda folder: _edit_config(folder, extra="1"),
        "config huge tile": lambda folder: _edit_config(folder, tile_size=10**9),
        "config wrong type": lambda folder: _edit_config(folder, class_names="membrane"),
    }.items():
        folder = root / "models" / name
        _copy_tree(model_folders["segmentation"], folder)
        edit(folder)
        paths[name] = folder
    return paths


def _copy_tree(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())


def _edit_config(folder: Path, extra: str | None = None, **changes) -> None:
    path = folder / "config.json"
    document = json.loads(path.read_text())
    document["config"].update(changes)
    if extra is not None:
        document["model_file"] = "../../outside.keras"
    path.write_text(json.dumps(document))


SEG_TRAIN = ["train", "--images", "{images}", "--labels", "{labels}", "--label-values", ISBI]
SEG_TRAIN += ["--config", "{unet settings}", "--out", "{root}/new model", "--quiet"]
SEG_PREDICT = ["predict", "--model", "{seg model}", "--images", "{images}"]
SEG_PREDICT += ["--out", "{root}/mask.tif", "--quiet"]
SEG_EVALUATE = ["evaluate", "--model", "{seg model}", "--images", "{images}"]
SEG_EVALUATE += ["--labels", "{labels}", "--label-values", ISBI, "--json"]
GREY_MODEL_COLOUR_IMAGE = re.escape(
    "This model was trained on grey images (1 channel) but the image has 3 colour channels "
    "(RGB). Use a model trained on colour images, or convert the image to grey first"
)
CLS_TRAIN = ["train", "--task", "classify", "--images", "{leaves}"]
CLS_TRAIN += ["--config", "{cnn settings}", "--out", "{root}/new model", "--quiet"]
CLS_PREDICT = ["predict", "--model", "{cls model}", "--images", "{leaves}"]
CLS_PREDICT += ["--out", "{root}/classes.csv", "--quiet"]
CLS_EVALUATE = ["evaluate", "--model", "{cls model}", "--images", "{leaves}", "--json"]


def _with(argv: list[str], **options: str) -> list[str]:
    """``argv`` with the values of some ``--options`` replaced (or added)."""
    argv = list(argv)
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def _without(argv: list[str], flag: str) -> list[str]:
    index = argv.index(flag)
    return argv[:index] + argv[index + 2 :]


# name -> (argv with {placeholders}, regular expression the error line must match)
CASES: dict[str, tuple[list[str], str]] = {
    # segmentation training: images
    "train: zero-byte images": (_with(SEG_TRAIN, images="{zero-byte tif}"), "empty"),
    "train: garbage images": (_with(SEG_TRAIN, images="{garbage tif}"), "damaged"),
    "train: truncated images": (_with(SEG_TRAIN, images="{truncated tif}"), "damaged"),
    "train: huge header": (_with(SEG_TRAIN, images="{huge tif, 1000 pages}"), "memory"),
    "train: huge, data missing": (_with(SEG_TRAIN, images="{huge tif, data missing}"), "ends"),
    "train: complex images": (_with(SEG_TRAIN, images="{complex tif}"), "complex64"),
    "train: 5D images": (_with(SEG_TRAIN, images="{5D tif}"), "5 dimensions"),
    "train: missing images": (_with(SEG_TRAIN, images="{missing}"), "does not exist"),
    "train: NaN images": (_with(SEG_TRAIN, images="{nan images}"), "NaN"),
    # segmentation training: labels
    "train: no labels": (_without(SEG_TRAIN, "--labels"), "needs --labels"),
    "train: narrow labels": (_with(SEG_TRAIN, labels="{narrow labels}"), "shape"),
    "train: float labels": (_with(SEG_TRAIN, labels="{float labels}"), "whole numbers"),
    "train: colour labels": (_with(SEG_TRAIN, labels="{colour labels}"), "colour channels"),
    "train: zero-byte labels": (_with(SEG_TRAIN, labels="{zero-byte tif}"), "empty"),
    "train: huge labels": (_with(SEG_TRAIN, labels="{huge tif, 1000 pages}"), "memory"),
    "train: nothing annotated": (
        _without(_with(SEG_TRAIN, labels="{no annotation}"), "--label-values"),
        "Nothing is annotated",
    ),
    "train: unmapped label value": (
        _with(SEG_TRAIN, label_values="255=background,7=membrane"),
        "0 that have no class",
    ),
    "train: too many classes": (
        _without(_with(SEG_TRAIN, labels="{many classes}"), "--label-values"),
        "only 2 classes",
    ),
    "train: one-class mapping": (
        _without(_with(SEG_TRAIN, label_values="255=background"), "--config"),
        "names only the class",
    ),
    # segmentation training: settings
    "train: invalid JSON": (_with(SEG_TRAIN, config="{invalid json}"), "not valid JSON"),
    "train: unknown setting": (_with(SEG_TRAIN, config="{unknown key}"), "tile_szie"),
    "train: wrong type": (_with(SEG_TRAIN, config="{wrong type}"), "whole number"),
    "train: absurd patch": (_with(SEG_TRAIN, config="{huge patch}"), "Patch size"),
    "train: absurd U-Net": (_with(SEG_TRAIN, config="{huge unet}"), "million weights"),
    "train: settings not UTF-8": (_with(SEG_TRAIN, config="{not utf-8}"), "UTF-8"),
    "train: settings nested deep": (_with(SEG_TRAIN, config="{deep json}"), "not valid JSON"),
    "train: number too long": (_with(SEG_TRAIN, config="{long number}"), "not valid JSON"),
    "train: settings /dev/zero": (_with(SEG_TRAIN, config="/dev/zero"), "larger than 1 MiB"),
    "train: settings a folder": (_with(SEG_TRAIN, config="{empty}"), "Cannot read config"),
    "train: missing settings": (_with(SEG_TRAIN, config="{missing}"), "Cannot read config"),
    "train: NaN budget": (_with(SEG_TRAIN, config="{nan budget}"), "time budget"),
    "train: 0 epochs": (_with(SEG_TRAIN, epochs="0"), "Epochs must be"),
    "train: negative budget": (_with(SEG_TRAIN, time_budget="-5"), "time budget"),
    "train: broken model to tune": (_with(SEG_TRAIN, **{"from": "{empty model file}"}), "Keras"),
    "train: classifier to tune": (_with(SEG_TRAIN, **{"from": "{cls model}"}), "classification"),
    "train: colour images, grey model to tune": (
        _with(SEG_TRAIN, images="{colour images}", **{"from": "{seg model}"}),
        GREY_MODEL_COLOUR_IMAGE,
    ),
    # segmentation prediction
    "predict: missing model": (_with(SEG_PREDICT, model="{missing}"), "not a napari-dlbio"),
    "predict: model without config": (_with(SEG_PREDICT, model="{no config}"), "config.json"),
    "predict: empty model file": (_with(SEG_PREDICT, model="{empty model file}"), "Keras"),
    "predict: config not JSON": (_with(SEG_PREDICT, model="{config not json}"), "config.json"),
    "predict: config not UTF-8": (_with(SEG_PREDICT, model="{config not utf-8}"), "config"),
    "predict: config names a file": (
        _with(SEG_PREDICT, model="{config unknown key}"),
        "unknown keys: model_file",
    ),
    "predict: config absurd tile": (_with(SEG_PREDICT, model="{config huge tile}"), "Tile size"),
    "predict: config wrong type": (_with(SEG_PREDICT, model="{config wrong type}"), "list"),
    "predict: zero-byte images": (_with(SEG_PREDICT, images="{zero-byte tif}"), "empty"),
    "predict: huge header": (_with(SEG_PREDICT, images="{huge tif, 1000 pages}"), "memory"),
    "predict: complex images": (_with(SEG_PREDICT, images="{complex tif}"), "complex64"),
    "predict: NaN images": (_with(SEG_PREDICT, images="{nan images}"), "NaN"),
    "predict: images of two sizes": (
        [*_with(SEG_PREDICT, images="{images}"), "--images", "{images}", "{narrow labels}"],
        "different sizes",
    ),
    "predict: colour images, grey model": (
        _with(SEG_PREDICT, images="{colour images}", probabilities="{root}/p.tif"),
        GREY_MODEL_COLOUR_IMAGE,
    ),
    "predict: mask exists": (_with(SEG_PREDICT, out="{taken}"), "already exists"),
    "predict: probabilities exist": (
        _with(SEG_PREDICT, probabilities="{taken}"),
        "already exists",
    ),
    "predict: folder is a file": (_with(SEG_PREDICT, out="{a file}/mask.tif"), "Could not write"),
    # segmentation evaluation
    "evaluate: no labels": (_without(SEG_EVALUATE, "--labels"), "needs --labels"),
    "evaluate: narrow labels": (_with(SEG_EVALUATE, labels="{narrow labels}"), "shape"),
    "evaluate: classes the model lacks": (
        _without(_with(SEG_EVALUATE, labels="{many classes}"), "--label-values"),
        "model knows only",
    ),
    "evaluate: huge images": (_with(SEG_EVALUATE, images="{huge tif, 1000 pages}"), "memory"),
    "evaluate: colour labels": (_with(SEG_EVALUATE, labels="{colour labels}"), "colour"),
    "evaluate: colour images, grey model": (
        _with(SEG_EVALUATE, images="{colour images}"),
        GREY_MODEL_COLOUR_IMAGE,
    ),
    # classification training
    "classify: missing folder": (_with(CLS_TRAIN, images="{missing}"), "is not a folder"),
    "classify: a file": (_with(CLS_TRAIN, images="{images}"), "is not a folder"),
    "classify: empty folder": (_with(CLS_TRAIN, images="{empty}"), "at least two classes"),
    "classify: one class": (_with(CLS_TRAIN, images="{one class}"), "at least two classes"),
    "classify: broken photos": (_with(CLS_TRAIN, images="{broken leaves}"), "two classes"),
    "classify: unknown setting": (_with(CLS_TRAIN, config="{cnn unknown}"), "layers"),
    "classify: absurd input size": (_with(CLS_TRAIN, config="{huge cnn}"), "input_size"),
    "classify: U-Net settings": (_with(CLS_TRAIN, config="{unet settings}"), "Unknown"),
    "classify: out is not a model": (_with(CLS_TRAIN, out="{occupied}"), "not a napari-dlbio"),
    "classify: out under a file": (_with(CLS_TRAIN, out="{a file}/model"), "is a file"),
    "classify: U-Net to tune": (_with(CLS_TRAIN, **{"from": "{seg model}"}), "segmentation"),
    # classification prediction
    "classes: missing images": (_with(CLS_PREDICT, images="{missing}"), "does not exist"),
    "classes: no image files": (_with(CLS_PREDICT, images="{no images}"), "No image files"),
    "classes: only broken photos": (
        _with(CLS_PREDICT, images="{broken leaves}"),
        "None of the given files",
    ),
    "classes: a TIFF stack": (_with(CLS_PREDICT, images="{images}"), "None of the given"),
    "classes: table exists": (_with(CLS_PREDICT, out="{taken csv}"), "already exists"),
    "classes: folder is a file": (_with(CLS_PREDICT, out="{a file}/x.csv"), "Could not write"),
    # classification evaluation
    "score: unknown classes": (_with(CLS_EVALUATE, images="{other leaves}"), "No sub-folder"),
    "score: missing folder": (_with(CLS_EVALUATE, images="{missing}"), "is not a folder"),
    "score: broken photos": (_with(CLS_EVALUATE, images="{broken leaves}"), "two classes"),
}


def _fill(argv: list[str], paths: dict[str, Path]) -> list[str]:
    return [arg.format(**{key: str(value) for key, value in paths.items()}) for arg in argv]


def _snapshot_all(paths, tree) -> dict[str, dict[str, str]]:
    return {
        key: tree(paths[key] if paths[key].is_dir() else paths[key].parent)
        for key in ("root", "seg model", "cls model")
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_requests_exit_2_with_one_line_and_change_nothing(case, work, tree, capsys):
    template, words = CASES[case]
    argv = _fill(template, work)
    before = _snapshot_all(work, tree)

    code = main(argv)

    captured = capsys.readouterr()
    assert code == 2, (argv, captured.err)
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("dlbio: error:")]
    assert len(errors) == 1, captured.err
    assert captured.err.splitlines()[-1] == errors[0]
    assert re.search(words, errors[0]), (words, errors[0])
    assert captured.out == ""
    assert _snapshot_all(work, tree) == before


def test_an_unwritable_output_folder_is_refused(work, tree, capsys):
    locked = work["root"] / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only folder stays writable")
        before = tree(work["root"])
        for template in (
            _with(SEG_PREDICT, out=f"{locked}/mask.tif"),
            _with(CLS_PREDICT, out=f"{locked}/classes.csv"),
            _with(CLS_TRAIN, out=f"{locked}/model"),
        ):
            assert main(_fill(template, work)) == 2
            err = capsys.readouterr().err
            assert "Traceback" not in err
            assert "dlbio: error:" in err
        assert tree(work["root"]) == before
    finally:
        locked.chmod(0o700)


def test_segmentation_training_checks_the_output_folder_before_training(
    work, tree, capsys, monkeypatch
):
    from napari_dlbio.models import segmentation

    def training(*args, **kwargs):
        raise AssertionError("training started before --out was checked")

    monkeypatch.setattr(segmentation, "iter_train_segmentation", training)
    before = tree(work["root"])
    assert main(_fill(_with(SEG_TRAIN, out="{occupied}"), work)) == 2
    assert "not a napari-dlbio model folder" in capsys.readouterr().err
    assert tree(work["root"]) == before


def test_a_colour_slice_found_while_streaming_leaves_no_file(work, tree, capsys, monkeypatch):
    from napari_dlbio.cli import segmentation as cli
    from napari_dlbio.models import segmentation

    # One tile per network call: the grey slices are written before the colour one is read.
    monkeypatch.setattr(segmentation, "PREDICT_PIXELS_PER_BATCH", 1)
    pages = []
    mask_of = cli.mask_from_probabilities

    def masking(probabilities, min_region_pixels):
        pages.append(probabilities.shape)
        return mask_of(probabilities, min_region_pixels)

    monkeypatch.setattr(cli, "mask_from_probabilities", masking)
    before = tree(work["root"])
    argv = _with(SEG_PREDICT, images="{colour last slice}", probabilities="{root}/p.tif")

    code = main(_fill(argv, work))

    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(GREY_MODEL_COLOUR_IMAGE, err), err
    assert len(pages) == 2  # slices 0 and 1 went to the files, which are gone
    assert tree(work["root"]) == before


def test_a_real_process_prints_one_line_and_no_traceback(work, tree):
    before = tree(work["root"])
    program = "import sys; from napari_dlbio.cli import main; sys.exit(main())"
    argv = ["predict", "--model", str(work["missing"]), "--images", str(work["images"])]
    result = subprocess.run(
        [sys.executable, "-c", program, *argv, "--out", str(work["root"] / "mask.tif")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("dlbio: error:")
    assert "absent.tif is not a napari-dlbio model folder" in result.stderr
    assert result.stdout == ""
    assert tree(work["root"]) == before


def test_file_names_that_are_not_utf8_work_end_to_end(model_folders, tmp_path):
    """Prediction of both tasks on files and folders named in Latin-1, in a real process."""
    name = b"caf\xe9 results"
    try:
        work = tmp_path / os.fsdecode(name)
        (work / "photos" / "blight").mkdir(parents=True)
    except (OSError, UnicodeError) as error:
        pytest.skip(f"this file system cannot hold the name {name!r}: {error}")
    rng = np.random.default_rng(0)
    stack = _tif(work / "stack.tif", rng.integers(0, 255, (2, 40, 40), dtype=np.uint8))
    photo = work / "photos" / "blight" / os.fsdecode(b"leaf \xe9.png")
    iio.imwrite(photo, rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    program = (
        "import sys\nfrom napari_dlbio.cli import main\n"
        "a = main(sys.argv[1:6] + ['--out', sys.argv[6]])\n"
        "b = main(sys.argv[7:12] + ['--out', sys.argv[12]])\n"
        "sys.exit(a or b)\n"
    )
    argv = ["predict", "--model", str(model_folders["segmentation"]), "--images", str(stack)]
    argv += [str(work / "mask.tif")]
    argv += ["predict", "--model", str(model_folders["classification"]), "--images"]
    argv += [str(work / "photos"), str(work / "classes.csv")]
    result = subprocess.run(
        [sys.executable, "-c", program, *argv],
        capture_output=True,
        timeout=300,
        check=False,
        env={**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"},
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr
    assert result.stdout.count(b"caf\xe9 results") == 2
    assert tifffile.imread(work / "mask.tif").shape == (2, 40, 40)
    table = (work / "classes.csv").read_bytes()
    assert b"leaf \xe9.png" in table
