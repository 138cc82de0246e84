"""Class folders to uint8 arrays, stratified split and class weights (pure numpy)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_dlbio.core.class_dataset import (
    channel_statistics,
    class_weights,
    load_class_folder,
    load_images,
    skipped_text,
    stratified_split,
    to_input_image,
    to_input_images,
)
from napari_dlbio.core.errors import InputDataError


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)
    return path


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """Two usable classes with odd names, mixed image kinds, and files that must be skipped."""
    root = tmp_path / "leaves"
    red = root / "Tomato leaf (mosaic) ü"
    green = root / "healthy, 100%"
    for i in range(3):
        _write(red / f"photo {i}.png", np.full((40, 50, 3), (200, 10, 10), np.uint8))
    _write(green / "grey one.png", np.full((30, 30), 120, np.uint8))
    _write(
        green / "with alpha.png",
        np.dstack(
            [np.full((20, 20, 3), (10, 200, 10), np.uint8), np.full((20, 20), 128, np.uint8)]
        ),
    )
    huge = np.zeros((1500, 1100, 3), np.uint8)
    huge[..., 1] = np.linspace(0, 255, 1100).astype(np.uint8)
    _write(green / "huge.png", huge)
    (green / "notes.txt").write_text("not an image")
    (green / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (green / "empty.png").write_bytes(b"")
    (root / "no images here").mkdir()
    return root


def test_class_folder_with_odd_names_and_bad_files(messy_folder: Path):
    data = load_class_folder(messy_folder, 32)

    assert data.class_names == ("Tomato leaf (mosaic) ü", "healthy, 100%")
    assert data.images.shape == (6, 32, 32, 3)
    assert data.images.dtype == np.uint8
    assert np.bincount(data.class_indices).tolist() == [3, 3]
    skipped = {path.name for path, _ in data.skipped}
    assert {"notes.txt", "broken.jpg", "empty.png", "no images here"} <= skipped
    assert {path.name for path in data.paths} >= {"grey one.png", "with alpha.png", "huge.png"}
    text = skipped_text(data.skipped)
    assert "broken.jpg" in text
    assert text.startswith(f"Skipped {len(data.skipped)} file(s)")


def test_grey_and_rgba_become_rgb_of_the_same_colour(messy_folder: Path):
    data = load_class_folder(messy_folder, 16)
    by_name = {path.name: image for path, image in zip(data.paths, data.images, strict=True)}

    assert np.all(by_name["grey one.png"] == 120)
    assert np.all(by_name["with alpha.png"] == (10, 200, 10))
    assert np.all(by_name["photo 0.png"] == (200, 10, 10))


def test_one_usable_class_is_refused(tmp_path: Path):
    _write(tmp_path / "only" / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "b.png").write_bytes(b"\x89PNG broken")

    with pytest.raises(InputDataError, match="two classes"):
        load_class_folder(tmp_path, 8)


def test_load_images_keeps_order_and_reports_unreadable_files(tmp_path: Path):
    good = _write(tmp_path / "a b.png", np.full((10, 12, 3), 7, np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")

    images, kept, skipped = load_images([bad, good], 8)

    assert images.shape == (1, 8, 8, 3)
    assert kept == (good,)
    assert skipped[0][0] == bad
    assert "bad.png" in skipped[0][1]


def test_large_photo_is_resized_with_anti_aliasing():
    # A fine checkerboard must average to grey, not alias into stripes.
    board = (np.indices((2000, 3000)).sum(axis=0) % 2 * 255).astype(np.uint8)

    small = to_input_image(board, 64, 3)

    assert small.shape == (64, 64, 3)
    assert abs(float(small.mean()) - 127.5) < 3
    assert small.std() < 5


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.full((4, 4), 1.0, np.float32), 255),
        (np.full((4, 4), 0.5, np.float64), 128),
        (np.full((4, 4), 65535, np.uint16), 255),
        (np.ones((4, 4), bool), 255),
        (np.full((4, 4, 2), 90, np.uint8), 90),
    ],
)
def test_pixel_types_are_brought_to_0_255(image: np.ndarray, expected: int):
    assert np.all(to_input_image(image, 4, 3) == expected)


def test_rgb_to_one_channel_uses_luminance():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255

    grey = to_input_image(red, 4, 1)

    assert grey.shape == (4, 4, 1)
    assert 50 < grey[0, 0, 0] < 60


def test_a_list_of_different_sizes_becomes_one_batch():
    batch = to_input_images([np.zeros((10, 20), np.uint8), np.zeros((30, 30, 4), np.uint8)], 8, 3)

    assert batch.shape == (2, 8, 8, 3)


def test_an_image_of_unknown_layout_is_refused():
    with pytest.raises(InputDataError, match="neither grey"):
        to_input_image(np.zeros((4, 4, 5), np.uint8), 4, 3)


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    labels = np.repeat(np.arange(3), [50, 20, 10])

    train, validation = stratified_split(labels, 0.2, seed=1)

    assert np.bincount(labels[validation]).tolist() == [10, 4, 2]
    assert set(train).isdisjoint(validation)
    assert len(train) + len(validation) == labels.size
    again = stratified_split(labels, 0.2, seed=1)
    other = stratified_split(labels, 0.2, seed=2)
    assert np.array_equal(again[1], validation)
    assert not np.array_equal(other[1], validation)


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=2, max_size=6),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 1000),
)
def test_every_class_with_two_images_is_in_both_sets(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)

    train, validation = stratified_split(labels, fraction, seed)

    assert np.array_equal(np.sort(np.concatenate([train, validation])), np.arange(labels.size))
    for label, count in enumerate(counts):
        assert (labels[train] == label).any()
        assert (labels[validation] == label).any() == (count >= 2)


def test_class_weights_make_every_class_count_the_same():
    labels = np.repeat(np.arange(3), [60, 30, 10])

    weights = class_weights(labels, 4)

    totals = [weights[k] * count for k, count in enumerate([60, 30, 10])]
    assert totals == pytest.approx([totals[0]] * 3)
    assert weights[3] == 0.0
    assert class_weights(np.repeat(np.arange(2), 5), 2) == {0: 1.0, 1: 1.0}


def test_channel_statistics():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[0, ..., 0] = 200
    images[..., 1] = 50

    mean, std = channel_statistics(images)

    assert mean == pytest.approx((100.0, 50.0, 0.0))
    assert std[0] == pytest.approx(100.0)
    assert std[2] > 0  # a constant channel must not divide by zero


def test_real_leaf_photos_with_spaces_in_names(plantvillage_dir: Path, tmp_path: Path):
    root = tmp_path / "two classes"
    for name in ("Potato___healthy", "Tomato_Leaf_Mold"):
        (root / name).mkdir(parents=True)
        for source in sorted((plantvillage_dir / name).glob("*.JPG"))[:3]:
            (root / name / source.name).write_bytes(source.read_bytes())

    data = load_class_folder(root, 64)

    assert data.images.shape == (6, 64, 64, 3)
    assert any(" " in path.name for path in data.paths)
    assert not data.skipped
    # Leaf photos are colourful, not blank.
    assert data.images.std() > 20
