"""Settings of the object step, and the roles a segmentation class can have.

Light on purpose (no scikit-image): model configs and the command line's options need them
without loading the object algorithms of :mod:`napari_dlbio.core.objects`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from napari_dlbio.core.config import JsonConfig, check

#: A boundary class (membranes) encloses objects: cells are the regions between.
BOUNDARY = "boundary"
#: An object class (mitochondria) is objects itself: its connected regions.
OBJECT = "object"
ROLES = (BOUNDARY, OBJECT)


def class_roles(class_names: Sequence[str], boundary_classes: Sequence[str]) -> dict[int, str]:
    """Role of every class but the background (index 0), by class index."""
    return {
        index: BOUNDARY if name in boundary_classes else OBJECT
        for index, name in enumerate(class_names)
        if index > 0
    }


@dataclasses.dataclass(frozen=True)
class ObjectSettings(JsonConfig):
    """How objects are cut out of class probabilities.

    Attributes
    ----------
    smoothing
        Gaussian sigma in pixels applied to the boundary probability (within each slice)
        before seeds and watershed; 0 uses the probability as it is.
    seed_threshold
        Each connected region where the smoothed boundary probability is below this seeds
        one cell.  Lower values split more (a membrane with a faint gap still separates two
        cells); higher values merge cells through faint membranes.
    through_stack
        False: objects per slice (anisotropic EM stacks, whose cells shift from section to
        section).  True: 3D objects through the stack (near-isotropic stacks).
    """

    smoothing: float = 2.0
    seed_threshold: float = 0.15
    through_stack: bool = False

    def validate(self) -> None:
        """Reject values that cannot cut objects, with a message saying what to change."""
        check(
            _is_number(self.smoothing) and math.isfinite(self.smoothing) and self.smoothing >= 0,
            f"Smoothing must be a number of pixels, 0 or more, not {self.smoothing!r}.",
        )
        check(
            _is_number(self.seed_threshold) and 0 < self.seed_threshold < 1,
            f"The seed threshold must be a probability between 0 and 1 (both excluded), "
            f"not {self.seed_threshold!r}.",
        )
        check(
            isinstance(self.through_stack, bool),
            f"Through stack must be true or false, not {self.through_stack!r}.",
        )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
