"""Bad files and folders through every reader: a clear error naming the input, nothing changed.

Every kind of bad file (zero bytes, garbage, truncated, a header claiming terabytes, complex
pixels, too many dimensions, a folder or nothing where a file should be) is fed to
``read_stack``, ``read_image`` and the napari reader, in a plain folder, a folder with spaces
and a folder whose name is not UTF-8.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_dlbio._reader import get_reader, read_stack_layer
from napari_dlbio.core import io
from napari_dlbio.core.errors import DlbioError, InputDataError


def _check_refused(call, path: Path, words: str, tree) -> DlbioError:
    """``call()`` must raise a DlbioError naming ``path`` and matching ``words``, changing
    nothing in the folder of ``path``."""
    folder = path.parent
    before = tree(folder)
    with pytest.raises(DlbioError) as caught:
        call()
    message = str(caught.value)
    assert path.name in message, message
    assert re.search(words, message), (words, message)
    assert "Traceback" not in message
    assert tree(folder) == before
    return caught.value


def test_read_stack_refuses_bad_files(
    bad_file_kind, location, in_location, bad_file, bad_file_words, tree
):
    path = bad_file(bad_file_kind, in_location(location))
    error = _check_refused(lambda: io.read_stack(path), path, bad_file_words[bad_file_kind], tree)
    assert isinstance(error, InputDataError)


def test_read_image_refuses_bad_files(
    bad_file_kind, location, in_location, bad_file, bad_file_words, tree
):
    path = bad_file(bad_file_kind, in_location(location))
    words = bad_file_words[bad_file_kind]
    if bad_file_kind in ("5D tif", "huge tif, 1000 pages") or "named" in bad_file_kind:
        words += "|not a file|not a single 2D image"
    error = _check_refused(lambda: io.read_image(path), path, words, tree)
    assert isinstance(error, InputDataError)


def test_napari_reader_declines_or_explains_bad_files(
    bad_file_kind, location, in_location, bad_file, bad_file_words, tree
):
    path = bad_file(bad_file_kind, in_location(location))
    before = tree(path.parent)
    # napari asks every plugin about every path: asking must never raise.
    reader = get_reader(str(path))
    if reader is None:
        # Single PNG / JPEG files are left to napari's own reader.
        assert path.suffix in (".png", ".jpg"), bad_file_kind
    else:
        _check_refused(lambda: reader(str(path)), path, bad_file_words[bad_file_kind], tree)
    assert get_reader([str(path), str(path)]) is None
    assert tree(path.parent) == before


# Folders of slices and class folders that cannot be read as such.
def _slices_of_different_sizes(folder: Path) -> Path:
    iio.imwrite(folder / "0.png", np.zeros((16, 16), np.uint8))
    iio.imwrite(folder / "1.png", np.zeros((16, 20), np.uint8))
    return folder


def _slices_with_a_zero_byte_one(folder: Path) -> Path:
    iio.imwrite(folder / "0.png", np.zeros((16, 16), np.uint8))
    (folder / "1.png").write_bytes(b"")
    return folder


def _slices_with_a_corrupt_one(folder: Path) -> Path:
    tifffile.imwrite(folder / "0.tif", np.zeros((16, 16), np.uint8))
    (folder / "1.tif").write_bytes(b"II*\x00" + b"\x00" * 40)
    return folder


def _slices_mixing_grey_and_rgb(folder: Path) -> Path:
    iio.imwrite(folder / "0.png", np.zeros((16, 16), np.uint8))
    iio.imwrite(folder / "1.png", np.zeros((16, 16, 3), np.uint8))
    return folder


SLICE_FOLDERS = {
    "different sizes": (_slices_of_different_sizes, r"1\.png.*same size"),
    "zero-byte slice": (_slices_with_a_zero_byte_one, r"1\.png is empty"),
    "corrupt slice": (_slices_with_a_corrupt_one, r"1\.tif.*damaged"),
    "grey and RGB mixed": (_slices_mixing_grey_and_rgb, r"1\.png.*channels"),
    "empty folder": (lambda folder: folder, "no PNG or TIFF"),
}


@pytest.mark.parametrize("case", list(SLICE_FOLDERS))
def test_bad_slice_folders_are_refused(case, location, in_location, tree):
    make, words = SLICE_FOLDERS[case]
    folder = make(in_location(location))
    before = tree(folder)
    for read in (io.read_stack, read_stack_layer):
        with pytest.raises(InputDataError, match=words) as caught:
            read(str(folder))
        assert folder.name in str(caught.value) or "png" in str(caught.value)
    assert get_reader(str(folder)) in (None, read_stack_layer)
    assert tree(folder) == before


def _write_leaf(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.full((16, 16, 3), value, np.uint8), extension=".png")
    return path


CLASS_FOLDERS = {
    "a file, not a folder": "is not a folder",
    "missing folder": "is not a folder",
    "empty folder": "at least two classes",
    "one class": "at least two classes",
    "classes of non-image files": "at least two classes",
    "slices, not classes": "at least two classes",
}


def _class_case(case: str, root: Path) -> Path:
    if case == "a file, not a folder":
        path = root / "leaves.png"
        _write_leaf(path)
        return path
    if case == "missing folder":
        return root / "absent"
    folder = root / "leaves"
    folder.mkdir()
    if case == "one class":
        _write_leaf(folder / "healthy" / "1.png")
        _write_leaf(folder / "healthy" / "2.png")
    elif case == "classes of non-image files":
        for name in ("healthy", "blight"):
            (folder / name).mkdir()
            (folder / name / "notes.txt").write_text("field notes")
    elif case == "slices, not classes":
        _write_leaf(folder / "0.png")
        _write_leaf(folder / "1.png")
    return folder


@pytest.mark.parametrize("case", list(CLASS_FOLDERS))
def test_bad_class_folders_are_refused(case, location, in_location, tree):
    root = in_location(location)
    path = _class_case(case, root)
    before = tree(root)
    with pytest.raises(InputDataError, match=CLASS_FOLDERS[case]) as caught:
        io.list_class_folder(path)
    assert path.name in str(caught.value)
    assert tree(root) == before


def test_class_folder_of_only_broken_images_names_every_file_and_why(
    location, in_location, bad_file, bad_file_words, tree
):
    root = in_location(location) / "leaves"
    kinds = [kind for kind in bad_file_words if "missing" not in kind and "folder" not in kind]
    for index, kind in enumerate(kinds):
        folder = root / ("healthy" if index % 2 else "blight")
        folder.mkdir(parents=True, exist_ok=True)
        path = bad_file(kind, folder)
        path.rename(folder / f"{index} {path.name}")
    before = tree(root)

    listing = io.list_class_folder(root)
    assert len(listing.paths) == len(kinds)
    with pytest.raises(InputDataError, match="at least two classes with readable images"):
        io.read_class_images(listing)
    reader = get_reader(str(root))
    assert reader is not None
    with pytest.raises(InputDataError, match="readable images"):
        reader(str(root))
    assert tree(root) == before


def test_broken_files_among_good_ones_are_skipped_with_their_reasons(
    location, in_location, bad_file
):
    root = in_location(location) / "leaves"
    for name in ("healthy", "blight"):
        _write_leaf(root / name / "good 1.png")
        _write_leaf(root / name / "good 2.png", value=200)
    kinds = ["zero-byte jpg", "truncated jpg", "huge tif, 1000 pages", "complex tif"]
    for kind in kinds:
        path = bad_file(kind, root / "blight")
        path.rename(path.with_name(kind + path.suffix))

    images = io.read_class_images(io.list_class_folder(root))

    assert images.data.shape == (4, 16, 16, 3)
    assert images.class_indices.tolist() == [0, 0, 1, 1]
    reasons = {path.stem: reason for path, reason in images.skipped}
    assert set(reasons) == set(kinds)
    assert "empty" in reasons["zero-byte jpg"]
    assert "damaged" in reasons["truncated jpg"]
    assert "memory" in reasons["huge tif, 1000 pages"]
    assert "complex" in reasons["complex tif"]


def test_good_files_in_awkward_places_read_normally(location, in_location):
    folder = in_location(location)
    stack = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    path = folder / "stack with spaces caf\u00e9.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    np.testing.assert_array_equal(io.read_stack(path).data, stack)
    reader = get_reader(str(path))
    assert reader is not None
    ((data, meta, kind),) = reader(str(path))
    assert kind == "image"
    np.testing.assert_array_equal(data, stack)
    assert meta["name"] == path.stem


def test_non_utf8_file_names_read_as_bytes_paths(tmp_path):
    name = b"caf\xe9 slice.tif"
    try:
        path = Path(os.fsdecode(tmp_path)) / os.fsdecode(name)
        tifffile.imwrite(path, np.ones((4, 5), np.uint8))
    except (OSError, UnicodeError) as error:
        pytest.skip(f"this file system cannot hold the name {name!r}: {error}")
    assert os.fsencode(path).endswith(name)
    assert io.read_stack(path).data.shape == (1, 4, 5)
    with pytest.raises(InputDataError) as caught:
        io.read_image(path.with_name(path.name + " missing.tif"))
    # The message keeps the undecodable byte as an escape, so it can still be printed.
    assert "\udce9" in str(caught.value)
    assert str(caught.value).encode("utf-8", "backslashreplace")


def test_labels_metadata_that_is_not_a_list_of_names_is_ignored(tmp_path):
    path = tmp_path / "mask.tif"
    for names in (5, "membrane", [1, 2], {"0": "a"}, None):
        description = json.dumps({"layer_type": io.LABELS_MARKER, "class_names": names})
        path.unlink(missing_ok=True)
        tifffile.imwrite(
            path, np.zeros((2, 5, 6), np.uint8), photometric="minisblack", description=description
        )
        stack = io.read_stack(path)
        assert stack.metadata == {"layer_type": "labels", "class_names": []}, names
        ((_, meta, kind),) = read_stack_layer(str(path))
        assert kind == "labels"
        assert meta["metadata"]["class_names"] == []


def test_unreadable_file_is_a_clear_error(tmp_path, tree):
    path = tmp_path / "locked.tif"
    tifffile.imwrite(path, np.ones((4, 5), np.uint8))
    path.chmod(0o000)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reading")
        with pytest.raises(InputDataError, match=r"locked\.tif"):
            io.read_stack(path)
    finally:
        path.chmod(0o600)
