"""Result layers in the viewer: added or updated in place, never over what the user made."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import numpy as np
from napari.layers import Labels, Layer

from napari_dlbio._layers import ANNOTATION, ROLE_KEY, LayerData

#: Added to the name of a one-slice result shown next to a whole-stack result.
SLICE_SUFFIX = "(slice)"


def show_layers_in_turns(
    viewer: Any, layers: Sequence[Layer | LayerData]
) -> Generator[None, None, list[Layer]]:
    """:func:`show_layers` one layer at a time, yielding after each.

    napari blocks its window for 200-350 ms to add a layer on a software-GL machine; a
    job's ``on_result`` that yields lets the window redraw and react between layers.
    The layer the user had active stays active (see :func:`keeping_active_layer`).
    """
    shown: list[Layer] = []
    with keeping_active_layer(viewer):
        for item in layers:
            shown += show_layers(viewer, [item])
            yield
    return shown


@contextlib.contextmanager
def keeping_active_layer(viewer: Any) -> Iterator[None]:
    """Make the layer active before the block active again after it.

    napari activates every layer it adds: a result arriving while the user paints would
    otherwise take the brush away.
    """
    active = viewer.layers.selection.active
    try:
        yield
    finally:
        if active is not None and active in viewer.layers:
            viewer.layers.selection.active = active


def show_layers(viewer: Any, layers: Sequence[Layer | LayerData]) -> list[Layer]:
    """Add result layers, replacing the plugin's earlier result of the same name and role.

    An earlier result of the same kind and dimensions is updated in place (cheap, and the
    user's display settings stay); other earlier results are swapped for the new layer.
    Nothing the user made or painted is ever replaced: layers without a role, and
    annotation layers, get a new layer with a free name next to them.  A result never
    shrinks: a one-slice result next to a whole-stack one is shown as its own
    ``"<name> (slice)"`` layer.  Layers may come ready-made (built in a job's thread, which
    keeps that work off the GUI thread) or as layer data tuples.
    """
    shown = []
    for item in layers:
        new = item if isinstance(item, Layer) else Layer.create(item[0], dict(item[1]), item[2])
        old = _replaced_by(viewer, new)
        if old is None:
            viewer.add_layer(new)
        elif _update_in_place(old, new):
            new = old
        else:
            index = viewer.layers.index(old)
            viewer.layers.remove(old)
            viewer.layers.insert(index, new)
        shown.append(new)
    return shown


def _replaced_by(viewer: Any, new: Layer) -> Layer | None:
    """The plugin's earlier result that ``new`` replaces, if any (``new`` may be renamed)."""
    role = new.metadata.get(ROLE_KEY)
    old = viewer.layers[new.name] if new.name in viewer.layers else None  # noqa: SIM401
    if old is None or role in (None, ANNOTATION) or old.metadata.get(ROLE_KEY) != role:
        return None
    if old.metadata.get("slice") is None and new.metadata.get("slice") is not None:
        new.name = f"{new.name} {SLICE_SUFFIX}"
        return _replaced_by(viewer, new)
    return old


def remove_layers_with_role(viewer: Any, role: str) -> None:
    """Remove the plugin's result layers of ``role`` (marks it drew for the user)."""
    for layer in list(viewer.layers):
        if layer.metadata.get(ROLE_KEY) == role:
            viewer.layers.remove(layer)


def _update_in_place(old: Layer, new: Layer) -> bool:
    """Give ``old`` the data and placement of ``new`` if they are layers of one kind."""
    if type(old) is not type(new) or old.ndim != new.ndim:
        return False
    old.data = new.data
    # Setting an unchanged placement still re-checks the viewer's dimensions and redraws
    # (15 ms a time on a software-GL machine).
    if not np.array_equal(old.scale, new.scale):
        old.scale = new.scale
    if not np.array_equal(old.translate, new.translate):
        old.translate = new.translate
    old.metadata = dict(new.metadata)
    if isinstance(new, Labels):
        old.features = new.features
    return True
