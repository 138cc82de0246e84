"""``dlbio export``: a model folder as a package other tools run (bioimage.io).

This module stays light: TensorFlow and the bioimageio packages load only when the command
runs, after the destination and the packages' presence have been checked.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from napari_dlbio.core.errors import DlbioError, InputDataError

FORMATS = ("bioimageio",)


def add_export_command(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``dlbio export`` to the sub-commands and return its parser."""
    export = commands.add_parser(
        "export",
        help="export a model as a bioimage.io package (needs the bioimageio extra)",
        description="Write a model folder or built-in model as a bioimage.io model package "
        "(a zip) that bioimage.io tools run; check it with 'bioimageio test FILE.zip'.",
    )
    export.add_argument(
        "--model", required=True, help="model folder, or builtin:NAME for a built-in model"
    )
    export.add_argument("--format", choices=FORMATS, default="bioimageio", help="package format")
    export.add_argument("--out", required=True, help="the package to write (FILE.zip, new)")
    export.add_argument(
        "--sample",
        metavar="IMAGE",
        help="image the test tensors and cover are made from (its first slice); default: "
        "an image that ships with napari-dlbio",
    )
    export.add_argument(
        "--licence",
        "--license",
        dest="licence",
        metavar="SPDX",
        help="licence of your own model (default CC-BY-4.0; built-in models keep theirs)",
    )
    export.add_argument(
        "--author", action="append", metavar="NAME", help="an author of the model (repeatable)"
    )
    return export


def export(args: argparse.Namespace) -> int:
    """``dlbio export``: write the package, then print where it is and how to test it."""
    from napari_dlbio.core.io import read_stack, refuse_existing_file

    out = Path(args.out)
    refuse_existing_file(out)
    if out.suffix.lower() != ".zip":
        raise InputDataError(f"--out {out}: a bioimage.io package is a .zip file; name it so.")
    if not _has_bioimageio():
        raise DlbioError(
            'dlbio export needs the bioimageio packages: pip install "napari-dlbio[bioimageio]".'
        )
    sample = read_stack(args.sample).data[:1] if args.sample else None
    from napari_dlbio.models.bioimageio_export import export_bioimageio

    path = export_bioimageio(
        args.model, out, sample=sample, licence=args.licence, authors=args.author or ()
    )
    sys.stdout.write(f"Wrote {path}; check it with: bioimageio test {path}\n")
    return 0


def _has_bioimageio() -> bool:
    try:
        return importlib.util.find_spec("bioimageio.spec") is not None
    except ModuleNotFoundError:  # not even the bioimageio namespace
        return False
