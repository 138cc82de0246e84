"""The models shipped in the package: listed, named ``builtin:NAME`` everywhere, never changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_dlbio._sample_data import ISBI_IMAGE, ISBI_LABELS
from napari_dlbio.cli import main
from napari_dlbio.core.builtin_models import BUILTIN_FOLDER, builtin_model, verify

SHIPPED = {
    "em-membranes": ("segmentation", ["background", "membrane"]),
    "em-membranes-mitochondria": ("segmentation", ["background", "membrane", "mitochondrion"]),
    "plantvillage-15": ("classification", 15),
}


def test_dlbio_models_json_lists_every_built_in_model_with_its_folder_and_card(capsys):
    assert main(["models", "--json"]) == 0
    listed = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(SHIPPED)
    for name, (task, classes) in SHIPPED.items():
        entry = listed[name]
        assert entry["task"] == task
        if isinstance(classes, int):
            assert len(entry["classes"]) == classes
        else:
            assert entry["classes"] == classes
        folder = BUILTIN_FOLDER / name
        assert entry["path"] == str(folder)
        assert (folder / "model.keras").stat().st_size < 10 * 2**20
        card = (folder / "README.md").read_text(encoding="utf-8")
        for section in ("## Training data", "**Terms.**", "train_builtin_models.py", "## Held-out"):
            assert section in card, (name, section)
        verify(builtin_model(name))


def test_dlbio_models_prints_one_entry_per_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert f"builtin:{name}\n" in out


def test_an_unknown_built_in_name_gets_the_list_of_names(tmp_path, capsys):
    out = tmp_path / "mask.tif"
    argv = ["predict", "--model", "builtin:em-membrane", "--images", str(ISBI_IMAGE)]
    assert main([*argv, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "no built-in model 'em-membrane'" in error
    assert "builtin:em-membranes, builtin:em-membranes-mitochondria" in error
    assert not out.exists()


def test_the_built_in_membrane_model_segments_the_sample_at_once(tmp_path):
    """A useful mask with no training: the sample's membranes (seen in training)."""
    out = tmp_path / "mask.tif"
    argv = ["predict", "--model", "builtin:em-membranes", "--images", str(ISBI_IMAGE)]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    mask = tifffile.imread(out) == 1
    truth = tifffile.imread(ISBI_LABELS) == 0
    iou = np.count_nonzero(mask & truth) / np.count_nonzero(mask | truth)
    # The shipped model scores 0.705 here; a network that learned no membranes stays
    # far below (from scratch, the correction benchmark starts at 0.41).
    assert iou > 0.65


def test_fine_tuning_a_built_in_model_writes_a_new_folder_and_leaves_it_intact(tmp_path):
    common = ["--images", str(ISBI_IMAGE), "--labels", str(ISBI_LABELS)]
    common += ["--label-values", "255=background,0=membrane", "--epochs", "1", "--quiet"]
    inside = BUILTIN_FOLDER / "em-membranes"
    assert main(["train", "--from", "builtin:em-membranes", *common, "--out", str(inside)]) == 2
    config = tmp_path / "short.json"
    config.write_text(json.dumps({"steps_per_epoch": 2, "patch_size": 128, "batch_size": 2}))
    out = tmp_path / "mine"
    argv = ["train", "--from", "builtin:em-membranes", *common, "--config", str(config)]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "model.keras").is_file()
    verify(builtin_model("em-membranes"))  # every file as shipped


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_built_in_model_loads_with_safe_mode_and_its_classes(name):
    from napari_dlbio.models.store import load_model_folder

    model = load_model_folder(f"builtin:{name}")
    assert tuple(model.config.class_names) == builtin_model(name).classes
