"""``dlbio predict --instances`` and the object scores of ``dlbio evaluate``, with the
built-in EM models on ISBI 2012 sections."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from napari_dlbio._reader import read_stack_layer
from napari_dlbio.cli import main
from napari_dlbio.cli.objects import check_fits_in_memory
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.instance_metrics import match_instances, truth_cells, truth_objects

MEMBRANES = "builtin:em-membranes"
MITOCHONDRIA = "builtin:em-membranes-mitochondria"


@pytest.fixture(scope="module")
def sections(isbi_dir, structures_dir, tmp_path_factory):
    """Sections 25-26 (full size) with their membrane and mitochondrion ground truth."""
    folder = tmp_path_factory.mktemp("sections")
    images = tifffile.imread(isbi_dir / "train-volume.tif")[25:27]
    paths = {"images": folder / "images.tif", "labels": folder / "labels.tif"}
    tifffile.imwrite(paths["images"], images, photometric="minisblack")
    tifffile.imwrite(
        paths["labels"],
        tifffile.imread(isbi_dir / "train-labels.tif")[25:27],
        photometric="minisblack",
    )
    paths["mitochondria"] = tifffile.imread(structures_dir / "mitochondria.tif")[25:27] == 255
    paths["membranes"] = tifffile.imread(isbi_dir / "train-labels.tif")[25:27] == 0
    return paths


def read_table(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def predict_objects(sections, folder, *extra):
    argv = ["predict", "--model", MITOCHONDRIA, "--images", str(sections["images"])]
    argv += ["--out", str(folder / "mask.tif"), "--instances", str(folder / "objects"), "--quiet"]
    return main([*argv, *extra])


def test_instances_writes_cells_objects_and_their_table(sections, tmp_path, capsys):
    assert predict_objects(sections, tmp_path, "--pixel-size", "0.004") == 0
    summary = capsys.readouterr().out
    cells = tifffile.imread(tmp_path / "objects" / "cells.tif")
    mitochondria = tifffile.imread(tmp_path / "objects" / "mitochondrion.tif")
    for labels in (cells, mitochondria):
        assert labels.shape == (2, 512, 512)
        assert labels.dtype == np.uint32
    # Per-slice objects: no label is shared by two slices.
    assert not set(np.unique(cells[0])[1:]) & set(np.unique(cells[1])[1:])
    # The objects agree with the sections' true cells and mitochondria.
    assert match_instances(truth_cells(sections["membranes"]), cells)["f1"] >= 0.8
    assert match_instances(truth_objects(sections["mitochondria"]), mitochondria)["f1"] >= 0.7
    rows = read_table(tmp_path / "objects" / "objects.csv")
    kinds = {row["class"] for row in rows}
    assert kinds == {"cells", "mitochondrion"}
    cell_rows = [row for row in rows if row["class"] == "cells"]
    assert len(cell_rows) == len(np.unique(cells)) - 1
    assert f"({len(cell_rows)} cells, " in summary
    row = cell_rows[0]
    label, z = int(row["label"]), int(row["slice"])
    pixels = int(np.count_nonzero(cells[z] == label))
    assert int(row["area_pixels"]) == pixels
    assert float(row["area"]) == pytest.approx(pixels * 0.004**2, rel=1e-5)
    # napari opens the objects back as a Labels layer.
    ((data, _, kind),) = read_stack_layer(str(tmp_path / "objects" / "cells.tif"))
    assert kind == "labels"
    np.testing.assert_array_equal(data, cells)


def test_objects_through_the_stack_are_one_row_each(sections, tmp_path):
    assert predict_objects(sections, tmp_path, "--through-stack") == 0
    mitochondria = tifffile.imread(tmp_path / "objects" / "mitochondrion.tif")
    rows = [
        row
        for row in read_table(tmp_path / "objects" / "objects.csv")
        if row["class"] == "mitochondrion"
    ]
    labels = np.unique(mitochondria)[1:]
    assert len(rows) == len(labels)
    # Mitochondria run through both sections: some label is in both slices.
    assert set(np.unique(mitochondria[0])) & set(np.unique(mitochondria[1])) - {0}
    for row in rows:
        first = int(np.flatnonzero((mitochondria == int(row["label"])).any(axis=(1, 2)))[0])
        assert int(row["slice"]) == first
        assert row["perimeter"] == ""  # undefined for volumes, written empty


def test_existing_object_files_are_never_overwritten(sections, tmp_path, capsys):
    (tmp_path / "objects").mkdir()
    (tmp_path / "objects" / "cells.tif").write_bytes(b"mine")
    assert predict_objects(sections, tmp_path) == 2
    assert "cells.tif" in capsys.readouterr().err
    assert (tmp_path / "objects" / "cells.tif").read_bytes() == b"mine"
    assert not (tmp_path / "mask.tif").exists()
    assert sorted(p.name for p in (tmp_path / "objects").iterdir()) == ["cells.tif"]


def test_bad_object_settings_and_classifiers_get_one_clear_line(sections, tmp_path, capsys):
    assert predict_objects(sections, tmp_path, "--seed-threshold", "1.5") == 2
    assert "seed threshold" in capsys.readouterr().err
    argv = ["predict", "--model", "builtin:plantvillage-15", "--images", str(sections["images"])]
    argv += ["--out", str(tmp_path / "classes.csv"), "--instances", str(tmp_path / "objects")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "classifier" in error
    assert "--instances" in error
    assert not (tmp_path / "objects").exists()


def test_evaluate_reports_the_fields_object_scores(sections, capsys):
    argv = ["evaluate", "--model", MEMBRANES, "--images", str(sections["images"])]
    argv += ["--labels", str(sections["labels"]), "--label-values", "255=background,0=membrane"]
    assert main([*argv, "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    cells = report["objects"]["cells"]
    assert cells["role"] == "boundary"
    assert cells["v_rand"] >= 0.95
    assert cells["v_info"] >= 0.95
    assert cells["cells"]["f1"] >= 0.8
    assert cells["cells"]["n_true"] == int(truth_cells(sections["membranes"]).max())
    assert main([*argv, "--quiet"]) == 0
    assert "V_rand" in capsys.readouterr().out


def test_objects_through_a_stack_too_big_for_memory_are_refused():
    with pytest.raises(InputDataError, match="per slice"):
        check_fits_in_memory((100_000, 10_000, 10_000), 3)
