"""A form over a config dataclass: the main settings shown, the rest under "Advanced".

Each setting is a magicgui widget (check box, Enum combo box, spin box) in a magicgui
:class:`~magicgui.widgets.Container`; initial values come from the config's own defaults
(the rules of thumb live there, once).  Three small pieces are plain Qt, where magicgui
cannot do the job:

- "Advanced" is superqt's ``QCollapsible``: magicgui has no collapsible container.
- An optional setting (None = no limit) shows "none" at 0 through the special value text of
  the native ``QDoubleSpinBox``: magicgui spin boxes have no null value.  For the same
  reason an optional integer is a float spin box with 0 decimals, since magicgui's integer
  ``SpinBox`` (superqt's ``QLargeIntSpinBox``) shows no special value text.
- The number of decimals is set on the native ``QDoubleSpinBox``: magicgui derives it from
  the step only.

Also here: the settings Train shows for each task, and :class:`ClassTicks`, the classes a
user ticks (which are boundaries), as magicgui check boxes inside the Qt form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox
from magicgui.widgets.bases import ValueWidget
from qtpy.QtWidgets import QFormLayout, QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from napari_dlbio.core.config import JsonConfig, apply_changes

_NONE = "none"
#: Settings whose 0 means None (no limit), besides those whose default is None.
_OPTIONAL = ("time_budget_s", "early_stopping_patience")


@dataclass(frozen=True)
class Setting:
    """One field of the form.

    Attributes
    ----------
    keys
        Config fields it sets (``"network.depth"`` reaches into a nested config); several
        keys share one value (one "augmentation" box for all augmentation flags).
    label
        What the user reads.
    advanced
        Shown under "Advanced".
    training
        A training setting, applied to a fine-tuned model too (others describe the network).
    factor
        Config value = form value x factor (e.g. minutes on the form, seconds in the config).
    maximum, decimals
        Limits of number fields.
    """

    keys: tuple[str, ...]
    label: str
    advanced: bool = False
    training: bool = True
    factor: float = 1.0
    maximum: float = 100_000
    decimals: int = 3


_AUGMENT = ("augment_flips", "augment_rotations", "augment_elastic", "augment_intensity")

#: What Train shows of a :class:`~napari_dlbio.core.segmentation_config.SegmentationConfig`.
SEGMENTATION_SETTINGS = (
    Setting(("learning_rate",), "learning rate", decimals=5, maximum=1.0),
    Setting(("batch_size",), "batch size (patches)", maximum=1024),
    Setting(("epochs",), "epochs"),
    Setting(("time_budget_s",), "time budget (min)", factor=60.0, decimals=1),
    Setting(("network.depth",), "U-Net depth", training=False, maximum=8),
    Setting(("network.base_filters",), "base filters", training=False, maximum=512),
    Setting(_AUGMENT, "augmentation"),
    Setting(("min_region_pixels",), "remove specks under (px)"),
    Setting(("patch_size",), "patch size", advanced=True, maximum=2048),
    Setting(("steps_per_epoch",), "steps per epoch", advanced=True),
    Setting(("validation_fraction",), "validation fraction", advanced=True, maximum=0.5),
    Setting(("early_stopping_patience",), "early-stopping patience", advanced=True),
    Setting(("loss",), "loss", advanced=True),
    Setting(("class_weights",), "weight classes by area", advanced=True),
    Setting(("network.batch_norm",), "batch norm", advanced=True, training=False),
    Setting(("network.dropout",), "dropout", advanced=True, training=False, maximum=0.95),
    Setting(("tile_size",), "prediction tile size", advanced=True, training=False, maximum=8192),
    Setting(("seed",), "random seed", advanced=True, maximum=2**31 - 1),
)
#: What Train shows of a :class:`~napari_dlbio.core.classifier_config.ClassifierConfig`.
CLASSIFIER_SETTINGS = (
    Setting(("learning_rate",), "learning rate", decimals=5, maximum=1.0),
    Setting(("batch_size",), "batch size", maximum=4096),
    Setting(("epochs",), "epochs"),
    Setting(("time_budget_s",), "time budget (min)", factor=60.0, decimals=1),
    Setting(("backbone",), "network", training=False),
    Setting(("input_size",), "input size (px)", training=False, maximum=1024),
    Setting(("augmentation",), "augmentation"),
    Setting(("filters",), "first filters (small CNN)", advanced=True, training=False),
    Setting(("blocks",), "blocks (small CNN)", advanced=True, training=False, maximum=7),
    Setting(("dropout",), "dropout", advanced=True, training=False, maximum=0.95),
    Setting(("fine_tune_epochs",), "backbone fine-tune epochs", advanced=True),
    Setting(("validation_fraction",), "validation fraction", advanced=True, maximum=0.95),
    Setting(("early_stopping_patience",), "early-stopping patience", advanced=True),
    Setting(("class_weights",), "weight classes by frequency", advanced=True),
    Setting(("seed",), "random seed", advanced=True, maximum=2**31 - 1),
)


class ConfigForm(QWidget):
    """magicgui fields for ``settings`` of ``defaults``; :meth:`config` builds a validated
    config.

    Attributes
    ----------
    fields
        The magicgui widget of each setting, by the setting's first config key.
    """

    def __init__(self, defaults: JsonConfig, settings: Sequence[Setting]) -> None:
        super().__init__()
        self.defaults = defaults
        self.settings = list(settings)
        self.fields: dict[str, ValueWidget] = {
            setting.keys[0]: _field(setting, _get(defaults, setting.keys[0]))
            for setting in self.settings
        }
        main, advanced = Container(), Container()
        main.margins = (0, 0, 0, 0)
        for setting in self.settings:
            # appended, not passed as widgets=: magicgui lines labels up only then
            (advanced if setting.advanced else main).append(self._at(setting))
        more = QCollapsible("Advanced")
        more.addWidget(advanced.native)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(main.native)
        layout.addWidget(more)

    def set_value(self, key: str, value: Any) -> None:
        """Put a config value (in config units) into the field of ``key``."""
        setting = next(s for s in self.settings if s.keys[0] == key)
        self.fields[key].value = _to_form(value, setting.factor)

    def values(self, training_only: bool = False) -> dict[str, Any]:
        """Config values by dotted key, optionally only the training settings."""
        values: dict[str, Any] = {}
        for setting in self.settings:
            if training_only and not setting.training:
                continue
            value = self._read(setting)
            values.update({key: value for key in setting.keys})
        return values

    def config(self, **fixed: Any) -> JsonConfig:
        """The defaults with the form's values and ``fixed`` applied (validated)."""
        return apply_changes(self.defaults, {**self.values(), **fixed})

    def set_architecture_enabled(self, enabled: bool) -> None:
        """Enable or disable the network fields (a fine-tuned model keeps its own)."""
        for setting in self.settings:
            if not setting.training:
                self._at(setting).enabled = enabled

    def _at(self, setting: Setting) -> ValueWidget:
        return self.fields[setting.keys[0]]

    def _read(self, setting: Setting) -> Any:
        value = self._at(setting).value
        default = _get(self.defaults, setting.keys[0])
        if isinstance(default, bool | Enum):
            return value
        if value == 0 and _optional(setting, default):
            return None
        value *= setting.factor
        return round(value) if isinstance(default, int) else float(value)


class ClassTicks(QWidget):
    """A form row of classes to tick (none ticked at first), with a hint line below.

    Parameters
    ----------
    label
        The row's label, e.g. "Boundary classes".
    tooltip
        What ticking a class means.
    """

    def __init__(self, label: str, tooltip: str) -> None:
        super().__init__()
        self.boxes = Container(labels=False)
        self.boxes.margins = (0, 0, 0, 0)
        self.boxes.tooltip = tooltip
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow(label, self.boxes.native)
        form.addRow(self.hint)

    def names(self) -> list[str]:
        """The classes listed."""
        return [box.text for box in self.boxes]

    def ticked(self) -> tuple[str, ...]:
        """The classes ticked, in the listed order."""
        return tuple(box.text for box in self.boxes if box.value)

    def set_names(self, names: Sequence[str]) -> None:
        """List ``names``; a class listed before keeps its tick."""
        if list(names) == self.names():
            return
        ticked = set(self.ticked())
        self.boxes.clear()
        for name in names:
            self.boxes.append(CheckBox(text=name, value=name in ticked))

    def tick(self, names: Sequence[str]) -> None:
        """Tick exactly the listed classes among ``names``."""
        for box in self.boxes:
            box.value = box.text in names


def _field(setting: Setting, default: Any) -> ValueWidget:
    """A magicgui widget showing ``default`` (a config value) in the form's units."""
    if isinstance(default, bool):
        return CheckBox(value=default, label=setting.label)
    if isinstance(default, Enum):
        choices = [(member.value, member) for member in type(default)]
        return ComboBox(choices=choices, value=default, label=setting.label)
    optional = _optional(setting, default)
    integer = isinstance(default, int) and setting.factor == 1.0
    if integer and not optional:
        return SpinBox(value=default, max=int(setting.maximum), label=setting.label)
    decimals = 0 if integer else setting.decimals
    spin = FloatSpinBox(max=setting.maximum, step=10 ** -min(decimals, 3), label=setting.label)
    spin.native.setDecimals(decimals)  # magicgui derives decimals from the step only
    if optional:
        spin.native.setSpecialValueText(_NONE)  # shown at 0: no limit
    spin.value = _to_form(default, setting.factor)
    return spin


def _optional(setting: Setting, default: Any) -> bool:
    """Whether 0 on the form means None (no limit) in the config."""
    return default is None or setting.keys[0] in _OPTIONAL


def _to_form(value: Any, factor: float) -> Any:
    """A config value in the form's units (None shows as 0, "none")."""
    if value is None:
        return 0
    return value if factor == 1.0 else value / factor


def _get(config: JsonConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value
