"""The Train settings form: magicgui fields that give back the config they were built from."""

from __future__ import annotations

import pytest
from magicgui.widgets.bases import ValueWidget

from napari_dlbio._widgets._config_form import (
    CLASSIFIER_SETTINGS,
    SEGMENTATION_SETTINGS,
    ConfigForm,
)
from napari_dlbio.core.classifier_config import ClassifierConfig
from napari_dlbio.core.segmentation_config import LossKind, SegmentationConfig

pytestmark = pytest.mark.gui


def _form(qtbot, defaults=None, settings=SEGMENTATION_SETTINGS) -> ConfigForm:
    form = ConfigForm(defaults or SegmentationConfig(), settings)
    qtbot.addWidget(form)
    return form


@pytest.mark.parametrize(
    ("defaults", "settings"),
    [(SegmentationConfig(), SEGMENTATION_SETTINGS), (ClassifierConfig(), CLASSIFIER_SETTINGS)],
)
def test_an_untouched_form_gives_back_its_defaults_with_their_types(
    qtbot, defaults, settings
) -> None:
    form = _form(qtbot, defaults, settings)
    assert form.config() == defaults
    for key, value in form.values().items():
        default = defaults
        for part in key.split("."):
            default = getattr(default, part)
        assert type(value) is type(default), key


def test_the_fields_are_magicgui_widgets(qtbot) -> None:
    form = _form(qtbot)
    assert form.fields.keys() == {setting.keys[0] for setting in SEGMENTATION_SETTINGS}
    assert all(isinstance(field, ValueWidget) for field in form.fields.values())


def test_the_time_budget_is_minutes_on_the_form_and_seconds_in_the_config(qtbot) -> None:
    form = _form(qtbot)
    form.set_value("time_budget_s", 90)
    assert form.fields["time_budget_s"].value == 1.5
    assert form.config().time_budget_s == 90.0
    form.fields["time_budget_s"].value = 2
    assert form.values()["time_budget_s"] == 120.0


def test_an_optional_setting_at_zero_reads_none(qtbot) -> None:
    form = _form(qtbot)
    budget = form.fields["time_budget_s"]  # None by default
    assert (budget.value, budget.native.text()) == (0, "none")
    form.set_value("early_stopping_patience", 7)
    assert form.config().early_stopping_patience == 7
    form.set_value("early_stopping_patience", None)
    assert form.fields["early_stopping_patience"].native.text() == "none"
    assert form.config().early_stopping_patience is None
    assert form.config().time_budget_s is None


def test_an_enum_setting_gives_the_enum_member(qtbot) -> None:
    form = _form(qtbot)
    form.set_value("loss", LossKind.DICE)
    assert form.fields["loss"].native.currentText() == LossKind.DICE.value
    assert form.config().loss is LossKind.DICE


def test_turning_off_the_architecture_disables_exactly_the_network_fields(qtbot) -> None:
    form = _form(qtbot)
    form.set_architecture_enabled(False)
    disabled = {key for key, field in form.fields.items() if not field.enabled}
    assert disabled == {s.keys[0] for s in SEGMENTATION_SETTINGS if not s.training}
    assert "network.depth" in disabled
    form.set_architecture_enabled(True)
    assert all(field.enabled for field in form.fields.values())
