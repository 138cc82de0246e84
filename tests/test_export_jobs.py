"""The Export widget's file jobs write what reads back the same (no viewer needed)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_dlbio._widgets._export_jobs import export_image, export_objects, objects_table
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import CancelToken, Notice, run_to_end
from napari_dlbio.core.io import LABELS_MARKER, OutputExistsError, read_stack
from napari_dlbio.core.measurements import FEATURE_COLUMNS, csv_text, measure_objects
from napari_dlbio.core.object_files import object_files
from napari_dlbio.core.object_finder import ObjectKind, concatenate_tables


@pytest.mark.parametrize("shape", [(3, 16, 16), (4, 16, 16), (5, 16, 16), (3, 16, 16, 3)])
def test_a_float_map_reads_back_with_its_slices(tmp_path, shape) -> None:
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    path = tmp_path / "uncertainty.tif"
    run_to_end(export_image(path, data, cancel=CancelToken()))
    # tifffile stores 3 or 4 (Y, X) slices as the colours of one page unless told not to.
    stack = read_stack(path)
    np.testing.assert_array_equal(stack.data, data)


def instance_stack(seed: int, depth: int = 3) -> np.ndarray:
    """(Z, 24, 32) uint32 labels: a few rectangles per slice, unique through the stack."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((depth, 24, 32), np.uint32)
    label = 70_000  # beyond uint16
    for z in range(depth):
        for _ in range(3):
            y, x = rng.integers(0, 18), rng.integers(0, 26)
            labels[z, y : y + 5, x : x + 6] = label
            label += 1
    return labels


def objects(depth: int = 3) -> tuple[np.ndarray, dict, dict]:
    """A grey stack and, by kind, its instance labels and objects tables."""
    image = np.random.default_rng(1).random((depth, 24, 32))
    labels = {"cells": instance_stack(2, depth), "mitochondrion": instance_stack(3, depth)}
    tables = {
        kind: measure_objects(volume, image, kind, (0.5, 0.5)) for kind, volume in labels.items()
    }
    return image, labels, tables


def rows(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_objects_are_written_as_the_command_line_writes_them(tmp_path) -> None:
    image, labels, tables = objects()
    # The layers hold the tables as napari does: a pandas DataFrame per layer.
    features = {kind: objects_table(pd.DataFrame(table)) for kind, table in tables.items()}
    # The mitochondria layer comes first in the viewer: cells are written first all the same.
    written = run_to_end(
        export_objects(
            tmp_path / "objects",
            {"mitochondrion": labels["mitochondrion"], "cells": labels["cells"]},
            features,
            None,
            cancel=CancelToken(),
        )
    )
    names = ["cells.tif", "mitochondrion.tif", "objects.csv"]
    assert [path.rsplit("/", 1)[-1] for path in written] == names
    for kind, volume in labels.items():
        with tifffile.TiffFile(tmp_path / "objects" / f"{kind}.tif") as tif:
            assert len(tif.pages) == 3
            description = json.loads(tif.pages[0].description)
            read = tif.asarray()
        assert description == {"layer_type": LABELS_MARKER, "objects": kind}
        assert read.dtype == np.uint32
        np.testing.assert_array_equal(read, volume)

    # The command line: slice by slice through the same writer, each slice's kinds in turn.
    kinds = [ObjectKind(1, "membrane", "boundary"), ObjectKind(2, "mitochondrion", "object")]
    with object_files(tmp_path / "cli", kinds, 3) as files:
        for z in range(3):
            found = {kind: volume[z] for kind, volume in labels.items()}
            table = concatenate_tables(
                [measure_objects(found[k], image[z], k, (0.5, 0.5), z) for k in found]
            )
            files.add_slice(found, table)
    for name in names:
        assert (tmp_path / "objects" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    assert list(rows(tmp_path / "objects" / "objects.csv")[0]) == list(FEATURE_COLUMNS)


def test_an_existing_file_is_never_overwritten_and_nothing_is_written(tmp_path) -> None:
    _, labels, tables = objects()
    (tmp_path / "cells.tif").write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="does not overwrite"):
        run_to_end(export_objects(tmp_path, labels, tables, None, cancel=CancelToken()))
    assert (tmp_path / "cells.tif").read_bytes() == b"precious"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cells.tif"]


def test_a_one_slice_prediction_writes_its_slice_and_says_so(tmp_path) -> None:
    image = np.random.default_rng(0).random((1, 24, 32))
    cells = instance_stack(4, depth=1)
    table = measure_objects(cells, image, "cells", first_slice=7)
    events = []
    run_to_end(
        export_objects(tmp_path, {"cells": cells}, {"cells": table}, 7, cancel=CancelToken()),
        events.append,
    )
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "cells.tif"), cells[0])
    assert {row["slice"] for row in rows(tmp_path / "objects.csv")} == {"7"}
    notices = [event.text for event in events if isinstance(event, Notice)]
    assert any("slice 7 only" in text for text in notices)


def test_a_2d_image_and_no_objects_give_one_page_and_the_columns(tmp_path) -> None:
    empty = np.zeros((24, 32), np.uint32)
    table = measure_objects(empty, empty, "cells")
    run_to_end(
        export_objects(tmp_path, {"cells": empty}, {"cells": table}, None, cancel=CancelToken())
    )
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "cells.tif"), empty)
    assert (tmp_path / "objects.csv").read_text(encoding="utf-8") == csv_text(table)


def test_objects_need_an_objects_table_and_one_shape(tmp_path) -> None:
    with pytest.raises(InputDataError, match="no label, class"):
        objects_table(pd.DataFrame({"index": [0, 1], "area": [1.0, 2.0]}))
    _, labels, tables = objects()
    labels["mitochondrion"] = labels["mitochondrion"][:2]
    with pytest.raises(InputDataError, match="shape"):
        run_to_end(export_objects(tmp_path, labels, tables, None, cancel=CancelToken()))
    assert not any(tmp_path.iterdir())
