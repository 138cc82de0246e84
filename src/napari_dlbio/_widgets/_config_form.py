"""A form over a config dataclass: the main settings shown, the rest under "Advanced".

Initial values come from the config's own defaults (the rules of thumb live there, once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_dlbio._widgets._training_job import apply_changes
from napari_dlbio.core.config import JsonConfig

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


def _set_number(spin: QSpinBox | QDoubleSpinBox, value: Any, factor: float) -> None:
    number = 0.0 if value is None else value / factor  # 0 shows "none"
    spin.setValue(round(number) if isinstance(spin, QSpinBox) else number)


def _get(config: JsonConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value
