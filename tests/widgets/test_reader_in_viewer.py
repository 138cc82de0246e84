"""Opening data in a real viewer: the plugin's sample and reader, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_dlbio.core.errors import InputDataError

PLUGIN = "napari-dlbio"


def test_viewer_opens_data_and_survives_bad_input(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "isbi2012")
    assert [layer.name for layer in viewer.layers] == ["ISBI 2012 EM", "ISBI 2012 ground truth"]
    assert type(viewer.layers[1]).__name__ == "Labels"

    broken = tmp_path / "broken stack.tif"
    broken.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputDataError, match=r"broken stack\.tif.*damaged.*no image pages"):
        viewer.open(str(broken), plugin=PLUGIN)
    assert len(viewer.layers) == 2
