"""Grad-CAM: in [0, 1], at the image's resolution, and on the object that decides the class."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from napari_dlbio.core.classifier_config import ClassifierConfig
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig
from napari_dlbio.models._tf import load_keras
from napari_dlbio.models.classification import train_classifier
from napari_dlbio.models.gradcam import grad_cam
from napari_dlbio.models.store import ModelFolder
from napari_dlbio.models.unet import build_unet

keras = load_keras()
RADIUS = 4


def _blob_images(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dark noisy images; odd ones hold a bright disk at a random place (class "blob")."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 80, (n, size, size, 3)).astype(np.uint8)
    labels = np.arange(n) % 2
    masks = np.zeros((n, size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    for i in np.flatnonzero(labels):
        cy, cx = rng.integers(RADIUS, size - RADIUS, 2)
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= RADIUS**2
        images[i][masks[i]] = 255
    return images, labels, masks


def _assert_unit_range(cam: np.ndarray) -> None:
    assert cam.min() >= 0.0
    assert cam.max() <= 1.0


@pytest.fixture(scope="module")
def blob_classifier() -> ModelFolder:
    images, labels, _ = _blob_images(160, seed=0)
    config = ClassifierConfig(
        class_names=("plain", "blob"),
        input_size=32,
        filters=8,
        blocks=3,
        convs_per_block=1,
        stem_stride=1,
        epochs=6,
        augmentation=False,
        learning_rate=3e-3,
        batch_size=16,
    )
    result = train_classifier(images, labels, config)
    assert result.model.metrics["val_accuracy"] >= 0.9
    return result.model


def test_classifier_cam_peaks_on_the_blob(blob_classifier: ModelFolder):
    images, labels, masks = _blob_images(20, seed=1)
    hits = []
    for image, mask in zip(images[labels == 1], masks[labels == 1], strict=True):
        cam = grad_cam(blob_classifier, image, class_index=1)
        assert cam.dtype == np.float32
        assert cam.shape == (32, 32)
        _assert_unit_range(cam)
        peak = np.unravel_index(cam.argmax(), cam.shape)
        hits.append(binary_dilation(mask, iterations=2)[peak])
    assert np.mean(hits) >= 0.8


def _centred_blob(shape: tuple[int, int]) -> np.ndarray:
    """A map that knows nothing: a centred Gaussian, sigma a quarter of the side."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    sigma = min(shape) / 4
    return np.exp(-((yy - (shape[0] - 1) / 2) ** 2 + (xx - (shape[1] - 1) / 2) ** 2) / sigma**2 / 2)


def test_classifier_cam_mass_lies_on_the_evidence_not_on_the_centre(
    blob_classifier: ModelFolder,
):
    images, labels, masks = _blob_images(40, seed=4)
    cam_shares, blob_shares, area_shares = [], [], []
    for image, mask in zip(images[labels == 1], masks[labels == 1], strict=True):
        near = binary_dilation(mask, iterations=2)
        cam = grad_cam(blob_classifier, image, class_index=1)
        blob = _centred_blob(cam.shape)
        cam_shares.append(cam[near].sum() / cam.sum())
        blob_shares.append(blob[near].sum() / blob.sum())
        area_shares.append(near.mean())

    # Mass share on the disk (and a 2-pixel margin) over the share of the image it covers.
    concentration = np.mean(cam_shares) / np.mean(area_shares)
    assert concentration > 3.0
    assert concentration > 2 * np.mean(blob_shares) / np.mean(area_shares)


def test_classifier_cam_is_sharp_on_the_disk_and_depends_on_the_class(
    blob_classifier: ModelFolder,
):
    images, labels, masks = _blob_images(40, seed=4)
    blob_shares, plain_shares, area_shares = [], [], []
    for image, mask in zip(images[labels == 1], masks[labels == 1], strict=True):
        blob_cam = grad_cam(blob_classifier, image, class_index=1)
        plain_cam = grad_cam(blob_classifier, image, class_index=0)
        blob_shares.append(blob_cam[mask].sum() / blob_cam.sum())
        # An all-zero map (no evidence for "plain" anywhere) has no mass on the disk.
        plain_shares.append(plain_cam[mask].sum() / max(plain_cam.sum(), 1e-12))
        area_shares.append(mask.mean())

    # On the disk itself, no margin: Guided Grad-CAM keeps about 7 times the disk's area
    # share of its mass there; the 8 x 8-cell LayerCAM it replaced 4.9, a centred blob 1.6.
    assert np.mean(blob_shares) / np.mean(area_shares) > 5.0
    # A leaf detector would show the disk for either class; the map of "plain" must not.
    assert np.mean(plain_shares) < np.mean(area_shares)


def test_classifier_cam_has_the_input_image_resolution(blob_classifier: ModelFolder):
    images, _, _ = _blob_images(2, seed=2)
    big = np.kron(images[1], np.ones((3, 2, 1), np.uint8))  # 96 x 64 x 3
    grey = images[1, :, :20, 0]

    assert grad_cam(blob_classifier, big).shape == (96, 64)
    cam = grad_cam(blob_classifier, grey)
    assert cam.shape == (32, 20)
    _assert_unit_range(cam)


def test_classifier_cam_explains_the_predicted_class_by_default(blob_classifier: ModelFolder):
    images, labels, _ = _blob_images(2, seed=3)
    image = images[labels == 1][0]

    assert np.array_equal(grad_cam(blob_classifier, image), grad_cam(blob_classifier, image, 1))


def test_classifier_cam_refuses_bad_requests(blob_classifier: ModelFolder):
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InputDataError, match="Class index 2 does not exist"):
        grad_cam(blob_classifier, image, class_index=2)
    with pytest.raises(InputDataError, match="segmentation"):
        grad_cam(blob_classifier, image, region=np.ones((32, 32), bool))
    with pytest.raises(InputDataError, match="one image"):
        grad_cam(blob_classifier, np.zeros((2, 32, 32, 3), np.uint8))


@pytest.fixture(scope="module")
def blob_unet() -> ModelFolder:
    """A tiny U-Net that segments bright disks, trained for a few seconds."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.3, (64, 32, 32)).astype(np.float32)
    masks = np.zeros(images.shape, bool)
    yy, xx = np.mgrid[:32, :32]
    for i in range(len(images)):
        cy, cx = rng.integers(RADIUS, 32 - RADIUS, 2)
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= RADIUS**2
    images[masks] = 1.0
    # Full resolution: on 32-pixel images a net on 2 x 2 blocks leaves an 8 x 8 map to explain.
    network = UNetConfig(depth=2, base_filters=8, stem_stride=1)
    keras.utils.set_random_seed(0)
    model = build_unet(network, 1, 2)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    model.fit(
        images[..., None], masks[..., None].astype(np.float32), batch_size=8, epochs=8, verbose=0
    )
    config = SegmentationConfig(
        class_names=("background", "blob"), input_channels=1, network=network
    )
    return ModelFolder(model=model, task=Task.SEGMENTATION, config=config)


def _disk(shape: tuple[int, int], centre: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= RADIUS**2


@pytest.mark.parametrize("chosen", [0, 1])
def test_unet_cam_of_a_region_lies_on_its_object(blob_unet: ModelFolder, chosen: int):
    # Two identical disks on noise; 45 x 38 is no multiple of the U-Net's 4 (padding).
    image = np.random.default_rng(5).integers(0, 77, (45, 38)).astype(np.uint8)
    disks = [_disk(image.shape, (10, 10)), _disk(image.shape, (33, 27))]
    image[disks[0] | disks[1]] = 255

    cam = grad_cam(blob_unet, image, class_index=1, region=disks[chosen])

    assert cam.shape == (45, 38)
    assert cam.dtype == np.float32
    _assert_unit_range(cam)
    assert cam.max() == pytest.approx(1.0)
    near_chosen = binary_dilation(disks[chosen], iterations=4)
    near_other = binary_dilation(disks[1 - chosen], iterations=4)
    assert cam[near_chosen].sum() / cam.sum() > 0.7
    assert cam[near_other].sum() / cam.sum() < 0.1


def test_unet_cam_over_the_whole_image_defaults_to_the_foreground(blob_unet: ModelFolder):
    image = np.random.default_rng(6).integers(0, 77, (32, 32)).astype(np.uint8)
    disk = _disk(image.shape, (16, 16))
    image[disk] = 255

    cam = grad_cam(blob_unet, image)

    assert np.array_equal(cam, grad_cam(blob_unet, image, class_index=1))
    _assert_unit_range(cam)
    near = binary_dilation(disk, iterations=4)
    assert cam[near].sum() / cam.sum() > 2 * near.mean()


def test_unet_cam_refuses_bad_regions(blob_unet: ModelFolder):
    image = np.zeros((32, 32), np.uint8)
    with pytest.raises(InputDataError, match="region has shape"):
        grad_cam(blob_unet, image, region=np.ones((16, 16), bool))
    with pytest.raises(InputDataError, match="region is empty"):
        grad_cam(blob_unet, image, region=np.zeros((32, 32), bool))
    with pytest.raises(InputDataError, match="one 2D image"):
        grad_cam(blob_unet, np.zeros((3, 32, 32), np.uint8))
