"""Frozen, validated configuration dataclasses that round-trip through JSON.

Subclasses of :class:`JsonConfig` are plain frozen dataclasses whose fields are
``bool``, ``int``, ``float``, ``str``, an :class:`~enum.Enum`, a tuple of those, another
``JsonConfig``, or ``X | None``.  ``from_dict`` rejects unknown keys and wrong types with a
:class:`~napari_dlbio.core.errors.ConfigError`; each subclass checks its value ranges in
``validate``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from napari_dlbio.core.errors import ConfigError

C = TypeVar("C", bound="JsonConfig")

#: Settings files larger than this are refused unread.
MAX_CONFIG_BYTES = 2**20


class Task(Enum):
    """What a model does; recorded in every model folder."""

    SEGMENTATION = "segmentation"
    CLASSIFICATION = "classification"


@dataclasses.dataclass(frozen=True)
class JsonConfig:
    """Base of every config: validation on construction and lossless JSON round trip."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for impossible values (subclasses extend this)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (enums by value, tuples as lists)."""
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self: C, **changes: Any) -> C:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls: type[C], data: Any) -> C:
        """Build from a dict, rejecting unknown keys and values of the wrong type."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} expects a JSON object, got {type(data).__name__}.")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"Unknown {cls.__name__} setting(s): {', '.join(unknown)}. "
                f"Known settings: {', '.join(sorted(names))}."
            )
        values = {
            key: _from_plain(hints[key], value, f"{cls.__name__}.{key}")
            for key, value in data.items()
        }
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"{cls.__name__}: {error}") from None

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        """Parse JSON text produced by :meth:`to_json` (or written by hand)."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as error:
            # ValueError covers JSONDecodeError and numbers of too many digits;
            # RecursionError, brackets nested thousands deep.
            raise ConfigError(f"{cls.__name__}: not valid JSON ({error}).") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls: type[C], path: str | Path) -> C:
        """Read a JSON config file."""
        try:
            # Read a bounded amount: a wrong path (a huge image, /dev/zero) must not fill
            # the memory before it is found not to be a settings file.
            with open(path, "rb") as stream:
                raw = stream.read(MAX_CONFIG_BYTES + 1)
        except OSError as error:
            raise ConfigError(f"Cannot read config file {path}: {error}") from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path} is larger than {MAX_CONFIG_BYTES // 2**20} MiB, far too large for a "
                "settings file; give the JSON file with the settings."
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path} is not a UTF-8 text (JSON) file: {error}") from None
        return cls.from_json(text)


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def _to_plain(value: Any) -> Any:
    if isinstance(value, JsonConfig):
        return value.to_dict()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_to_plain(item) for item in value]
    return value


def _from_plain(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _from_plain(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}.")
        args = typing.get_args(hint)
        item_hint = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(item_hint, item, where) for item in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}.")
        return tuple(_from_plain(a, item, where) for a, item in zip(args, value, strict=True))
    if isinstance(hint, type) and issubclass(hint, JsonConfig):
        return hint.from_dict(value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(repr(member.value) for member in hint)
            raise ConfigError(f"{where}: {value!r} is not one of {allowed}.") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}.")
        return value
    raise ConfigError(f"{where}: unsupported setting type {hint!r}.")


def apply_changes(config: C, values: Mapping[str, Any]) -> C:
    """``config`` with dotted-key ``values`` replaced, nested configs included (validated).

    ``{"epochs": 5, "network.depth": 2}`` changes ``config.epochs`` and
    ``config.network.depth``.
    """
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[key] = value
    for head, changes in nested.items():
        top[head] = apply_changes(getattr(config, head), changes)
    return config.replace(**top)
