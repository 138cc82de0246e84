"""Shared fixtures of the reliability tests: bad files, tree snapshots, tiny model folders.

Bad files are made by :func:`make_bad_file` from a kind name; tests that take a
``bad_file_kind`` argument run once per kind (see :func:`pytest_generate_tests`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

# Claimed by the "huge" TIFF headers: 1000 slices of 100000 x 100000 pixels (9.1 TiB).
HUGE_SIDE = 100_000
HUGE_PAGES = 1000

# kind -> regular expression the error message must match (besides naming the file).
BAD_FILE_KINDS: dict[str, str] = {
    "zero-byte tif": "empty",
    "zero-byte png": "empty",
    "zero-byte jpg": "empty",
    "garbage tif": "damaged",
    "garbage png": "damaged",
    "garbage jpg": "damaged",
    "truncated tif": "damaged|ends before",
    "truncated png": "damaged",
    "truncated jpg": "damaged",
    "text named tif": "damaged|not a valid TIFF",
    "huge tif, data missing": "ends before",
    "huge tif, 1000 pages": "memory",
    "complex tif": "complex",
    "5D tif": "dimensions",
    "folder named tif": "no PNG or TIFF|not a file",
    "missing tif": "does not exist",
}

# Where the bad files live: plain, with spaces, and with a name that is not UTF-8.
LOCATIONS = {"plain": "data", "spaces": "my EM data", "non-UTF-8": "caf\udce9 data"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run tests taking ``bad_file_kind`` / ``location`` once per kind / location."""
    if "bad_file_kind" in metafunc.fixturenames:
        metafunc.parametrize("bad_file_kind", list(BAD_FILE_KINDS))
    if "location" in metafunc.fixturenames:
        metafunc.parametrize("location", list(LOCATIONS))


def folder_at(tmp_path: Path, location: str) -> Path:
    """A new folder under ``tmp_path`` named for ``location`` (skips if it cannot exist)."""
    folder = tmp_path / LOCATIONS[location]
    try:
        folder.mkdir()
    except (OSError, UnicodeEncodeError) as error:
        pytest.skip(f"this file system cannot hold the name {folder.name!r}: {error}")
    return folder


@pytest.fixture
def in_location(tmp_path: Path) -> Callable[[str], Path]:
    """``in_location(location)`` makes the folder of one of :data:`LOCATIONS`."""
    return lambda location: folder_at(tmp_path, location)


def _tiff_bytes(data: np.ndarray, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, **kwargs)
    return buffer.getvalue()


def _png_bytes(data: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", data, extension=".png")


def _jpg_bytes(data: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", data, extension=".jpg")


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def huge_tiff_bytes(*, pages: int, compressed: bool) -> bytes:
    """A little-endian TIFF whose header claims ``pages`` slices of 100000 x 100000 uint8.

    Uncompressed, the one page's strip would need 4 GB that the file does not have;
    compressed, every page points to the same 20-byte zlib strip, so the file is complete
    (a few hundred bytes per page) but decoding it would need ``pages`` x 10 GB.
    """
    strip = zlib.compress(bytes(64)) if compressed else b"\0" * 16
    byte_count = len(strip) if compressed else 4_000_000_000
    entries = 9
    ifd_size = 2 + 12 * entries + 4
    strip_offset = 8
    first_ifd = strip_offset + len(strip) + (len(strip) % 2)
    out = bytearray(b"II" + struct.pack("<HI", 42, first_ifd))
    out += strip + b"\0" * (len(strip) % 2)
    for page in range(pages):
        offset = first_ifd + page * ifd_size
        next_ifd = offset + ifd_size if page < pages - 1 else 0
        tags = [
            (256, 4, 1, HUGE_SIDE),  # ImageWidth
            (257, 4, 1, HUGE_SIDE),  # ImageLength
            (258, 3, 1, 8),  # BitsPerSample
            (259, 3, 1, 8 if compressed else 1),  # Compression: zlib or none
            (262, 3, 1, 1),  # Photometric: min-is-black
            (273, 4, 1, strip_offset),  # StripOffsets
            (277, 3, 1, 1),  # SamplesPerPixel
            (278, 4, 1, HUGE_SIDE),  # RowsPerStrip
            (279, 4, 1, byte_count),  # StripByteCounts
        ]
        assert len(tags) == entries
        out += struct.pack("<H", entries)
        for tag, kind, count, value in tags:
            if kind == 3:
                out += struct.pack("<HHIHH", tag, kind, count, value, 0)
            else:
                out += struct.pack("<HHII", tag, kind, count, value)
        out += struct.pack("<I", next_ifd)
    return bytes(out)


def make_bad_file(kind: str, folder: Path) -> Path:
    """Create one bad input of ``kind`` (a key of :data:`BAD_FILE_KINDS`) in ``folder``."""
    image = _noise((32, 40))
    contents: dict[str, tuple[str, bytes]] = {
        "zero-byte tif": ("scan.tif", b""),
        "zero-byte png": ("slice.png", b""),
        "zero-byte jpg": ("photo.jpg", b""),
        "garbage tif": ("scan.tif", b"II*\x00" + bytes(range(256)) * 4),
        "garbage png": ("slice.png", b"\x89PNG\r\n\x1a\n" + b"\xff" * 300),
        "garbage jpg": ("photo.jpg", b"\xff\xd8\xff\xe0" + b"\x13" * 300),
        "truncated tif": (
            "scan.tif",
            _tiff_bytes(_noise((4, 64, 64)), photometric="minisblack", compression="zlib")[:400],
        ),
        "truncated png": ("slice.png", _png_bytes(_noise((64, 64)))[:200]),
        "truncated jpg": ("photo.jpg", _jpg_bytes(_noise((64, 64, 3)))[:300]),
        "text named tif": ("notes.tif", "acquired on monday, 3 µm sections\n".encode()),
        "huge tif, data missing": ("huge.tif", huge_tiff_bytes(pages=1, compressed=False)),
        "huge tif, 1000 pages": ("huge.tif", huge_tiff_bytes(pages=HUGE_PAGES, compressed=True)),
        "complex tif": ("fft.tif", _tiff_bytes((image + 1j * image).astype(np.complex64))),
        "5D tif": (
            "timelapse.tif",
            _tiff_bytes(np.zeros((2, 2, 3, 16, 16), np.uint8), photometric="minisblack"),
        ),
    }
    if kind == "folder named tif":
        path = folder / "stack.tif"
        path.mkdir()
        return path
    if kind == "missing tif":
        return folder / "absent.tif"
    name, data = contents[kind]
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.fixture
def bad_file_words() -> dict[str, str]:
    """Per kind of bad file, a regular expression its error message must match."""
    return BAD_FILE_KINDS


@pytest.fixture
def bad_file() -> Callable[[str, Path], Path]:
    """``bad_file(kind, folder)`` creates a bad input and returns its path."""
    return make_bad_file


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too) with its SHA-256, link target or kind."""
    entries: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            path = base / name
            entries[str(path.relative_to(root))] = (
                f"link to {os.readlink(path)}" if path.is_symlink() else "folder"
            )
        for name in filenames:
            path = base / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                entries[relative] = f"link to {os.readlink(path)}"
            else:
                entries[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


@pytest.fixture
def tree() -> Callable[[Path], dict[str, str]]:
    """``tree(root)`` snapshots a folder, to prove later that nothing in it changed."""
    return snapshot


@pytest.fixture(scope="session")
def tiny_segmentation_config() -> Any:
    """A U-Net small enough to build, train and predict in about a second."""
    from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig

    return SegmentationConfig(
        network=UNetConfig(depth=2, base_filters=4),
        patch_size=32,
        batch_size=2,
        epochs=1,
        steps_per_epoch=2,
        validation_fraction=0.0,
        tile_size=32,
        tile_overlap=8,
    )


@pytest.fixture(scope="session")
def tiny_classifier_config() -> Any:
    """A small CNN for 32 x 32 RGB images of two classes."""
    from napari_dlbio.core.classifier_config import ClassifierConfig

    return ClassifierConfig(
        class_names=("healthy", "blight"),
        input_size=32,
        filters=4,
        blocks=2,
        batch_size=4,
        epochs=1,
        augmentation=False,
    )


@pytest.fixture(scope="session")
def model_folders(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_segmentation_config: Any,
    tiny_classifier_config: Any,
) -> dict[str, Path]:
    """Untrained but complete model folders of both tasks (made without training)."""
    from napari_dlbio.core.config import Task
    from napari_dlbio.models.classifier import build_classifier
    from napari_dlbio.models.store import save_model_folder
    from napari_dlbio.models.unet import build_unet

    root = tmp_path_factory.mktemp("models")
    config = tiny_segmentation_config
    unet = build_unet(config.network, config.input_channels, config.n_classes)
    classifier = build_classifier(tiny_classifier_config)
    return {
        "segmentation": save_model_folder(root / "unet", unet, Task.SEGMENTATION, config),
        "classification": save_model_folder(
            root / "classifier", classifier, Task.CLASSIFICATION, tiny_classifier_config
        ),
    }


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON text and return the path."""
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
