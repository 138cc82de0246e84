"""JsonConfig: validation, JSON round trip, clear errors for bad settings."""

from __future__ import annotations

import dataclasses
from enum import Enum

import pytest

from napari_dlbio.core.config import JsonConfig, check
from napari_dlbio.core.errors import ConfigError


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class InnerConfig(JsonConfig):
    depth: int = 2

    def validate(self) -> None:
        check(1 <= self.depth <= 8, f"depth must be 1..8, got {self.depth}.")


@dataclasses.dataclass(frozen=True)
class OuterConfig(JsonConfig):
    names: tuple[str, ...] = ("background", "membrane")
    rate: float = 1e-3
    budget: float | None = None
    colour: Colour = Colour.RED
    augment: bool = True
    inner: InnerConfig = InnerConfig()


def test_round_trip_through_json_is_lossless():
    config = OuterConfig(
        names=("a", "b", "c"),
        rate=0.5,
        budget=30.0,
        colour=Colour.BLUE,
        augment=False,
        inner=InnerConfig(depth=3),
    )
    assert OuterConfig.from_json(config.to_json()) == config


def test_integers_are_accepted_where_numbers_are_expected():
    assert OuterConfig.from_dict({"rate": 1}).rate == 1.0


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"learning_rate": 1e-3}, "Unknown OuterConfig setting(s): learning_rate"),
        ({"rate": "fast"}, "expected a number"),
        ({"augment": 1}, "expected true or false"),
        ({"colour": "green"}, "'green' is not one of 'red', 'blue'"),
        ({"names": "background"}, "expected a list"),
        ({"inner": {"depth": 99}}, "depth must be 1..8"),
        ({"inner": {"depth": 2.5}}, "expected a whole number"),
    ],
)
def test_bad_settings_raise_a_clear_config_error(data, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        OuterConfig.from_dict(data)


def test_invalid_json_text_is_reported_not_raised_raw():
    with pytest.raises(ConfigError, match="not valid JSON"):
        OuterConfig.from_json("{depth: 3")


def test_replace_validates_again():
    with pytest.raises(ConfigError, match="depth must be"):
        InnerConfig().replace(depth=0)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read config file"):
        OuterConfig.from_file(tmp_path / "absent.json")
