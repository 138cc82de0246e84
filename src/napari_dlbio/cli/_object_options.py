"""The object options of ``dlbio predict`` and ``dlbio evaluate`` (kept light: the parser is
built on every run, the object algorithms load only when used)."""

from __future__ import annotations

import argparse

from napari_dlbio.core.object_settings import ObjectSettings


def add_object_options(command: argparse.ArgumentParser, *, files: bool) -> None:
    """The object settings, and for ``predict`` where the objects go."""
    defaults = ObjectSettings()
    if files:
        command.add_argument(
            "--instances",
            metavar="DIR",
            help="segmentation: also write the objects: DIR/cells.tif for a boundary class, "
            "DIR/<class>.tif for each object class, and DIR/objects.csv (their features)",
        )
        command.add_argument(
            "--pixel-size",
            type=float,
            nargs="+",
            metavar="SIZE",
            help="pixel size for the physical sizes in objects.csv and the voxel size of "
            ".zarr outputs: one value (square pixels), Y X, or Z Y X (default: a zarr "
            "input's own, else 1, sizes in pixels)",
        )
    command.add_argument(
        "--smoothing",
        type=float,
        metavar="PX",
        help=f"objects: blur of the boundary probability in pixels (default {defaults.smoothing})",
    )
    command.add_argument(
        "--seed-threshold",
        type=float,
        metavar="P",
        help="objects: a cell starts where the smoothed boundary probability is below P "
        f"(default {defaults.seed_threshold}; lower splits more)",
    )
    command.add_argument(
        "--through-stack",
        action="store_true",
        help="objects: 3D objects through the stack instead of per slice (for near-isotropic "
        "volumes; serial EM sections are too thick for 3D cells)",
    )


def wants_objects(args: argparse.Namespace) -> bool:
    """Whether the command line asked for objects or changed how they are found."""
    return bool(
        getattr(args, "instances", None)
        or args.smoothing is not None
        or args.seed_threshold is not None
        or args.through_stack
        or getattr(args, "pixel_size", None)
    )
