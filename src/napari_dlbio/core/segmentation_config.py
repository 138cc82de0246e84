"""Settings of a segmentation model: the U-Net, its data pipeline, training and prediction.

Pure Python (no TensorFlow): the GUI builds these from its form, the CLI from a JSON file or
flags, and every model folder records one in ``config.json``.
"""

from __future__ import annotations

import dataclasses
from enum import Enum

from napari_dlbio.core.bioimage_processing import ProcessingStep
from napari_dlbio.core.config import JsonConfig, check
from napari_dlbio.core.object_settings import class_roles

# A predicted mask is uint8 with 0 = background, so at most 255 foreground classes.
MAX_CLASSES = 256
MAX_PATCH = 2048
# Weights of the largest U-Net accepted: 4 GiB of float32, 16 GiB with Adam's moments.
# The classic U-Net (depth 4, 64 filters) has about 31 million.
MAX_UNET_WEIGHTS = 1_000_000_000


class LossKind(Enum):
    """What the U-Net minimises; the values are what users read and write."""

    CROSS_ENTROPY = "cross-entropy"
    DICE = "dice"
    CROSS_ENTROPY_DICE = "cross-entropy + dice"


@dataclasses.dataclass(frozen=True)
class UNetConfig(JsonConfig):
    """Architecture of a 2D U-Net.

    Attributes
    ----------
    depth
        Number of down-sampling steps; inputs must be a multiple of :attr:`size_multiple`.
    stem_stride
        1 is the classic U-Net, whose first level works on every pixel.  2 (the default)
        starts with a learned 2 x 2 stride-2 convolution and ends with its transpose, so the
        U-Net's levels work on 2 x 2 pixel blocks: CPUs run convolutions over a handful of
        channels at full resolution at a fraction of their speed, and the stem makes
        training about 1.5 and prediction about 2 times faster at the same quality.
    base_filters
        Filters of the first level; each deeper level doubles them.
    batch_norm
        Batch normalisation after every convolution (faster, steadier training).
    dropout
        Dropout rate in the two deepest levels (0 disables it), as in the classic U-Net.
    l2
        L2 weight penalty on the convolution kernels (0 disables it).
    """

    depth: int = 4
    stem_stride: int = 2
    base_filters: int = 16
    batch_norm: bool = True
    dropout: float = 0.0
    l2: float = 0.0

    @property
    def size_multiple(self) -> int:
        """Image sides the network takes must be a multiple of this."""
        return self.stem_stride * 2**self.depth

    @property
    def weight_count(self) -> int:
        """Convolution weights of the network for one input channel (biases left out)."""
        filters = [self.base_filters * 2**level for level in range(self.depth + 1)]
        stem = self.stem_stride + 1  # kernel side of the stem convolution
        count = stem**2 * self.base_filters if self.stem_stride > 1 else 0
        incoming = self.base_filters if self.stem_stride > 1 else 1
        for f in filters:  # encoder levels, then the bottleneck
            count += 9 * incoming * f + 9 * f * f
            incoming = f
        for level in reversed(range(self.depth)):  # up-sampling, then two convolutions
            f = filters[level]
            count += 4 * filters[level + 1] * f + 9 * 2 * f * f + 9 * f * f
        return count

    def validate(self) -> None:
        """Reject architectures that cannot be built."""
        check(1 <= self.depth <= 8, f"U-Net depth must be between 1 and 8, not {self.depth}.")
        check(
            self.stem_stride in (1, 2, 4),
            f"U-Net stem stride must be 1, 2 or 4, not {self.stem_stride}.",
        )
        check(
            1 <= self.base_filters <= 512,
            f"U-Net base filters must be between 1 and 512, not {self.base_filters}.",
        )
        check(
            self.weight_count <= MAX_UNET_WEIGHTS,
            f"A U-Net of depth {self.depth} with {self.base_filters} base filters would have "
            f"about {self.weight_count / 1e6:,.0f} million weights, more than the "
            f"{MAX_UNET_WEIGHTS / 1e6:,.0f} million napari-dlbio accepts (16 GiB to train); "
            "lower the depth or the base filters (the classic U-Net has depth 4 and 64 filters).",
        )
        check(
            0.0 <= self.dropout < 1.0,
            f"Dropout must be at least 0 and below 1, not {self.dropout}.",
        )
        check(0.0 <= self.l2 <= 1.0, f"L2 penalty must be between 0 and 1, not {self.l2}.")


@dataclasses.dataclass(frozen=True)
class SegmentationConfig(JsonConfig):
    """Everything that describes a segmentation model and how it is trained.

    Attributes
    ----------
    class_names
        Name of every network class; index 0 is the background.
    boundary_classes
        Classes that draw the borders between objects (membranes): their objects are the
        regions they enclose.  Every other class but the background is an object class
        (mitochondria): its objects are its connected regions.  See
        :mod:`napari_dlbio.core.objects`.
    input_channels
        Channels of the images (1 for greyscale EM, 3 for RGB).
    network
        The U-Net architecture.
    normalise_low, normalise_high
        Percentiles mapped to 0 and 1 per slice before the network sees an image.
    augment_flips, augment_rotations, augment_elastic, augment_intensity
        Random flips, 90-degree rotations, elastic deformation and brightness/contrast
        changes of training patches.
    augment_scale
        Random zoom of training patches by up to ``1 + augment_scale`` in or out (0 = off):
        a model meant for images of other pixel sizes (another microscope, another lab)
        sees its structures at other sizes in training.
    patch_size
        Side of the square training patches (a multiple of ``network.size_multiple``).
    batch_size
        Patches per optimisation step.
    learning_rate
        Adam learning rate at the start of training.
    learning_rate_decay
        Warm the learning rate up over the first 20 steps, then lower it along a cosine to
        5 % of its start by the end of the epochs or of the time budget, whichever comes
        first (steadier final weights).
    epochs, steps_per_epoch
        Length of training (early stopping and the time budget may end it sooner).
    validation_fraction
        Share of the annotated slices (or, for a single slice, of its area) held out.
    early_stopping_patience
        Stop after this many epochs without a better validation loss; ``None`` never stops.
    time_budget_s
        Stop after this many seconds of training; ``None`` has no limit.
    loss
        Masked cross-entropy (the default), Dice, or their sum; unannotated pixels never
        count.  With the Dice term, short runs on sparse annotation first predicted the
        structure everywhere (membrane IoU 0.15-0.2 for the first minute on ISBI).
    class_weights
        Weight the cross-entropy by inverse class areas (weighted cross-entropy).
    seed
        Seed of patch sampling, augmentation and the validation split.
    tile_size, tile_overlap
        Prediction tiles (a multiple of ``network.size_multiple``) and their blended overlap.
    min_region_pixels
        In predicted masks, regions of a structure class with fewer pixels (4-connected,
        per slice) become background; 0 keeps all (see :mod:`napari_dlbio.core.masks`).
    input_processing, output_processing
        Set only for a model imported from a bioimage.io package that napari-dlbio did not
        write: its network is the package's (``network`` then only gives the size
        multiple of the image sides), ``input_processing`` replaces the percentile
        normalisation, and ``output_processing`` turns the network's output into class
        probabilities (see :mod:`napari_dlbio.core.bioimage_processing`).
    """

    class_names: tuple[str, ...] = ("background", "membrane")
    boundary_classes: tuple[str, ...] = ()
    input_channels: int = 1
    network: UNetConfig = dataclasses.field(default_factory=UNetConfig)
    normalise_low: float = 1.0
    normalise_high: float = 99.8
    augment_flips: bool = True
    augment_rotations: bool = True
    augment_elastic: bool = True
    augment_intensity: bool = True
    augment_scale: float = 0.0
    patch_size: int = 256
    batch_size: int = 4
    learning_rate: float = 3e-3
    learning_rate_decay: bool = True
    epochs: int = 100
    steps_per_epoch: int = 50
    validation_fraction: float = 0.1
    early_stopping_patience: int | None = 10
    time_budget_s: float | None = None
    loss: LossKind = LossKind.CROSS_ENTROPY
    class_weights: bool = False
    seed: int = 0
    tile_size: int = 512
    tile_overlap: int = 32
    min_region_pixels: int = 0
    input_processing: tuple[ProcessingStep, ...] | None = None
    output_processing: tuple[ProcessingStep, ...] = ()

    @property
    def packaged_network(self) -> bool:
        """Whether the network and its processing come from a bioimage.io package."""
        return self.input_processing is not None

    @property
    def n_classes(self) -> int:
        """Number of network classes, background included."""
        return len(self.class_names)

    def class_roles(self) -> dict[int, str]:
        """Role of every class but the background, by class index: boundary or object."""
        return class_roles(self.class_names, self.boundary_classes)

    @classmethod
    def classic(cls, **changes: object) -> SegmentationConfig:
        """The seed course's classic U-Net: depth 4, 64 filters, no batch norm.

        Dropout 0.5 in the deepest levels, Adam at a constant 1e-4, batch size 2,
        weighted cross-entropy.  Keyword arguments override single settings.
        """
        settings: dict[str, object] = {
            "network": UNetConfig(
                depth=4, stem_stride=1, base_filters=64, batch_norm=False, dropout=0.5, l2=0.0
            ),
            "batch_size": 2,
            "learning_rate": 1e-4,
            "learning_rate_decay": False,
            "class_weights": True,
            "loss": LossKind.CROSS_ENTROPY,
        }
        settings.update(changes)
        return cls(**settings)  # type: ignore[arg-type]

    @classmethod
    def interactive(cls, **changes: object) -> SegmentationConfig:
        """A U-Net to train from a user's first scribbles in napari, in bursts of seconds.

        Depth 3 and 8 filters at full resolution (no stem): on ISBI membranes from
        scribbles and corrections (``benchmarks/interactive_loop.py``), the default
        network's 2 x 2 stem learned too slowly in 10-second bursts and ended with its mask
        collapsed to one class (last-round held-out IoU 0.01); this one reached 0.4-0.5 in
        most runs but still swings between rounds.  Keyword arguments override single
        settings.
        """
        settings: dict[str, object] = {
            "network": UNetConfig(depth=3, stem_stride=1, base_filters=8),
        }
        settings.update(changes)
        return cls(**settings)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Reject impossible values with a message saying what to change."""
        multiple = self.network.size_multiple
        check(
            self.n_classes >= 2,
            "A segmentation needs at least 2 classes (background and one structure); "
            f"got {list(self.class_names)}.",
        )
        check(
            self.n_classes <= MAX_CLASSES,
            f"At most {MAX_CLASSES - 1} structure classes are supported, got {self.n_classes - 1}.",
        )
        check(
            all(name.strip() for name in self.class_names),
            "Class names must not be empty.",
        )
        check(
            len(set(self.class_names)) == self.n_classes,
            f"Class names must be different from each other: {list(self.class_names)}.",
        )
        unknown = [name for name in self.boundary_classes if name not in self.class_names[1:]]
        check(
            not unknown,
            f"Boundary classes {unknown} are not structure classes of this model; choose "
            f"among {list(self.class_names[1:])}.",
        )
        check(
            1 <= self.input_channels <= 64,
            f"Input channels must be between 1 and 64, not {self.input_channels}.",
        )
        check(
            0.0 <= self.normalise_low < self.normalise_high <= 100.0,
            "Normalisation percentiles need 0 <= low < high <= 100, "
            f"not low={self.normalise_low}, high={self.normalise_high}.",
        )
        check(
            0.0 <= self.augment_scale <= 1.0,
            f"Scale augmentation must be between 0 and 1, not {self.augment_scale}.",
        )
        check(
            multiple <= self.patch_size <= MAX_PATCH and self.patch_size % multiple == 0,
            f"Patch size {self.patch_size} must be a multiple of {multiple} (set by the U-Net's "
            f"depth and stem stride) between {multiple} and {MAX_PATCH}.",
        )
        check(
            1 <= self.batch_size <= 1024,
            f"Batch size must be between 1 and 1024, not {self.batch_size}.",
        )
        check(
            0.0 < self.learning_rate <= 1.0,
            f"Learning rate must be above 0 and at most 1, not {self.learning_rate}.",
        )
        check(
            1 <= self.epochs <= 100_000, f"Epochs must be between 1 and 100000, not {self.epochs}."
        )
        check(
            1 <= self.steps_per_epoch <= 1_000_000,
            f"Steps per epoch must be between 1 and 1000000, not {self.steps_per_epoch}.",
        )
        check(
            0.0 <= self.validation_fraction <= 0.5,
            f"Validation fraction must be between 0 and 0.5, not {self.validation_fraction}.",
        )
        check(
            self.early_stopping_patience is None or self.early_stopping_patience >= 1,
            "Early-stopping patience must be at least 1 epoch (or null for none), "
            f"not {self.early_stopping_patience}.",
        )
        check(
            self.time_budget_s is None or self.time_budget_s > 0,
            f"The time budget must be a positive number of seconds, not {self.time_budget_s}.",
        )
        check(
            multiple <= self.tile_size <= 8192 and self.tile_size % multiple == 0,
            f"Tile size {self.tile_size} must be a multiple of {multiple} (set by the U-Net's "
            f"depth and stem stride) between {multiple} and 8192.",
        )
        check(
            self.tile_overlap >= 0 and 2 * self.tile_overlap < self.tile_size,
            f"Tile overlap {self.tile_overlap} must be at least 0 and less than half the tile "
            f"size {self.tile_size}.",
        )
        check(
            self.min_region_pixels >= 0,
            f"The smallest region kept must be 0 pixels or more, not {self.min_region_pixels}.",
        )
