"""The pure parts of a bioimage.io package: citations, licences and the cover."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from napari_dlbio.core.bioimageio_cover import COVER_SIDE, mask_overlay, write_cover
from napari_dlbio.core.bioimageio_text import builtin_licence, card_citations
from napari_dlbio.core.builtin_models import builtin_model
from napari_dlbio.core.errors import ModelFolderError


def card(name: str) -> str:
    return (builtin_model(name).path / "README.md").read_text(encoding="utf-8")


def test_the_training_datas_citations_come_from_the_card() -> None:
    em = {doi for _, doi in card_citations(card("em-membranes"))}
    assert "10.3389/fnana.2015.00142" in em  # the ISBI 2012 challenge paper
    assert "10.1371/journal.pone.0038011" in em  # TrakEM2, which the ISBI terms ask for
    leaves = {doi for _, doi in card_citations(card("plantvillage-15"))}
    assert leaves == {"10.48550/arXiv.1511.08060", "10.3389/fpls.2016.01419"}
    assert card_citations("# A model\n\nNo training data section.") == []


def test_a_builtin_model_keeps_the_licence_its_data_requires() -> None:
    assert builtin_licence("em-membranes", None) == "CC-BY-NC-4.0"
    assert builtin_licence("plantvillage-15", "CC-BY-SA-3.0") == "CC-BY-SA-3.0"
    with pytest.raises(ModelFolderError, match=r"cannot be exported under CC-BY-4\.0"):
        builtin_licence("em-membranes", "CC-BY-4.0")
    with pytest.raises(ModelFolderError, match="no recorded licence"):
        builtin_licence("someone-elses", None)


def test_the_cover_tints_the_mask_and_is_two_to_one(tmp_path) -> None:
    image = np.full((600, 600, 1), 0.5, dtype=np.float32)
    mask = np.zeros((600, 600), dtype=np.uint8)
    mask[:100] = 1
    shown = mask_overlay(image, mask)
    assert (shown[200:] == 127).all()  # untouched grey
    assert not (shown[:100] == 127).all(axis=-1).any()  # every masked pixel tinted
    path = tmp_path / "cover.png"
    write_cover(path, shown, shown)
    cover = iio.imread(path)
    assert cover.shape[0] <= COVER_SIDE
    assert cover.shape[1] == 2 * cover.shape[0]
