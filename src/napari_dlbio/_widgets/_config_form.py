"""A form over a config dataclass: the main settings shown, the rest under "Advanced".

Initial values come from the config's own defaults (the rules of thumb live there, once).
Also here: the settings Train shows for each task, and :class:`ClassTicks`, the classes a
user ticks (which are boundaries), as magicgui check boxes inside the Qt form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from magicgui.widgets import CheckBox, Container
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_dlbio.core.config import JsonConfig, apply_changes

_NONE = "none"


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
    """Widgets for ``settings`` of ``defaults``; :meth:`config` builds a validated config."""

    def __init__(self, defaults: JsonConfig, settings: Sequence[Setting]) -> None:
        super().__init__()
        self.defaults = defaults
        self.settings = list(settings)
        self.fields: dict[str, QWidget] = {}
        main, advanced = QFormLayout(), QFormLayout()
        for setting in self.settings:
            field = self._field(setting, _get(defaults, setting.keys[0]))
            self.fields[setting.keys[0]] = field
            (advanced if setting.advanced else main).addRow(setting.label, field)
        more = QCollapsible("Advanced")
        inner = QWidget()
        inner.setLayout(advanced)
        more.addWidget(inner)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(main)
        layout.addWidget(more)

    def set_value(self, key: str, value: Any) -> None:
        """Put a config value (in config units) into the field of ``key``."""
        setting = next(s for s in self.settings if s.keys[0] == key)
        field = self.fields[key]
        if isinstance(field, QCheckBox):
            field.setChecked(bool(value))
        elif isinstance(field, QComboBox):
            field.setCurrentText(value.value)
        else:
            _set_number(field, value, setting.factor)

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
                self.fields[setting.keys[0]].setEnabled(enabled)

    def _field(self, setting: Setting, default: Any) -> QWidget:
        optional = default is None or setting.keys[0] in (
            "time_budget_s",
            "early_stopping_patience",
        )
        if isinstance(default, bool):
            box = QCheckBox()
            box.setChecked(default)
            return box
        if isinstance(default, Enum):
            combo = QComboBox()
            combo.addItems([member.value for member in type(default)])
            combo.setCurrentText(default.value)
            return combo
        if isinstance(default, float) or setting.factor != 1.0:
            spin: QSpinBox | QDoubleSpinBox = QDoubleSpinBox()
            spin.setDecimals(setting.decimals)
            spin.setSingleStep(10 ** -min(setting.decimals, 3))
        else:
            spin = QSpinBox()
        spin.setRange(0, int(setting.maximum) if isinstance(spin, QSpinBox) else setting.maximum)
        if optional:
            spin.setSpecialValueText(_NONE)  # shown at 0: no limit
        _set_number(spin, default, setting.factor)
        return spin

    def _read(self, setting: Setting) -> Any:
        field = self.fields[setting.keys[0]]
        if isinstance(field, QCheckBox):
            return field.isChecked()
        default = _get(self.defaults, setting.keys[0])
        if isinstance(field, QComboBox):
            return type(default)(field.currentText())
        value = field.value()
        if field.specialValueText() == _NONE and value == 0:
            return None
        value *= setting.factor
        if isinstance(default, int) and not isinstance(default, bool):
            return round(value)
        return float(value)


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


def _set_number(spin: QSpinBox | QDoubleSpinBox, value: Any, factor: float) -> None:
    number = 0.0 if value is None else value / factor  # 0 shows "none"
    spin.setValue(round(number) if isinstance(spin, QSpinBox) else number)


def _get(config: JsonConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value
