"""Instance label files and the objects table, written slice by slice into one folder.

``DIR/cells.tif`` (a boundary class's cells) and ``DIR/<class>.tif`` (each object class):
uint32 labels, 0 = no object, the image's (Z, Y, X); ``DIR/objects.csv``: the features table
(:mod:`napari_dlbio.core.measurements`).  The label files are uncompressed TIFF written one
page per slice (a volume never has to be in memory, and a big file reads back
memory-mapped); every file is written under a temporary name and appears only when all of
them are complete, so a stopped or failed run leaves nothing behind.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_dlbio.core.io import LABELS_MARKER, atomic_file, refuse_existing_file
from napari_dlbio.core.measurements import write_csv
from napari_dlbio.core.object_finder import ObjectKind, empty_table

OBJECTS_CSV = "objects.csv"


class ObjectFiles:
    """Open label files and table of a folder; add slices (or a whole volume) in order."""

    def __init__(self, writers: Mapping[str, Any], table_file: Any, depth: int) -> None:
        self._writers = dict(writers)
        self._table_file = table_file
        self._depth = depth
        self._written = 0
        self._header = True
        #: Objects written so far, by kind name.
        self.counts: Counter[str] = Counter()

    def add_slice(self, labels: Mapping[str, np.ndarray], table: Mapping[str, np.ndarray]) -> None:
        """Write the next slice's labels of every kind, and its rows of the table."""
        for name, writer in self._writers.items():
            writer.write(
                np.asarray(labels[name], dtype=np.uint32),
                contiguous=True,
                photometric="minisblack",
                description=_description(name),
                metadata=None,
            )
        self._written += 1
        self.add_rows(table)

    def add_volume(self, labels: Mapping[str, np.ndarray], table: Mapping[str, np.ndarray]) -> None:
        """Write whole (Z, Y, X) label volumes and their table."""
        for z in range(self._depth):
            self.add_slice({name: volume[z] for name, volume in labels.items()}, {})
        self.add_rows(table)

    def add_rows(self, table: Mapping[str, np.ndarray]) -> None:
        """Append rows to the objects table."""
        if table:
            write_csv(table, self._table_file, header=self._header)
            self._header = False
            self.counts.update(np.asarray(table["class"]).tolist())

    def finish(self) -> None:
        """Check every slice was written; a table without objects still gets its columns."""
        if self._written != self._depth:
            raise RuntimeError(f"{self._written} of {self._depth} slices were written.")
        if self._header:
            self.add_rows(empty_table())


@contextmanager
def object_files(folder: Path, kinds: Sequence[ObjectKind], depth: int) -> Iterator[ObjectFiles]:
    """Write ``kinds``' label files and ``objects.csv`` into ``folder`` (created if needed).

    Raises
    ------
    OutputExistsError
        One of the files exists already; nothing is written.
    """
    paths = [folder / kind.file_name for kind in kinds] + [folder / OBJECTS_CSV]
    for path in paths:
        refuse_existing_file(path)
    with ExitStack() as files:
        temporary = [files.enter_context(atomic_file(path)) for path in paths]
        writers = {
            kind.name: files.enter_context(tifffile.TiffWriter(path))
            for kind, path in zip(kinds, temporary, strict=False)
        }
        table_file = files.enter_context(open(temporary[-1], "w", newline="", encoding="utf-8"))
        written = ObjectFiles(writers, table_file, depth)
        yield written
        written.finish()


def _description(name: str) -> str:
    return json.dumps({"layer_type": LABELS_MARKER, "objects": name})
