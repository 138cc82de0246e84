"""The engine's loaded models: once per source, again when its files change."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from napari_dlbio.core.errors import ModelFolderError
from napari_dlbio.engine.handlers import _source_stamp, canonical_source
from napari_dlbio.engine.registry import ModelRegistry


def counting_registry() -> tuple[ModelRegistry, list[str], dict[str, int]]:
    loads: list[str] = []
    stamps: dict[str, int] = {}

    def load(source: str) -> object:
        loads.append(source)
        return object()

    return ModelRegistry(load, lambda source: stamps.get(source, 0)), loads, stamps


def test_a_source_is_loaded_once_and_found_by_id_or_source() -> None:
    registry, loads, _ = counting_registry()
    first = registry.load("a")
    assert registry.load("a") is first
    assert registry.get(first.id) is first
    assert registry.get("a") is first
    assert loads == ["a"]
    assert registry.load("b").id != first.id


def test_changed_files_load_again_under_a_new_id() -> None:
    registry, loads, stamps = counting_registry()
    old = registry.load("a")
    stamps["a"] = 1
    new = registry.load("a")
    assert new.id != old.id
    assert loads == ["a", "a"]
    assert registry.get("a") is new


def test_threads_asking_at_once_load_once() -> None:
    registry, loads, _ = counting_registry()
    barrier = threading.Barrier(4, timeout=30)

    def ask() -> None:
        barrier.wait()
        registry.load("a")

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert loads == ["a"]


def test_unload_forgets_a_model() -> None:
    registry, loads, _ = counting_registry()
    loaded = registry.load("a")
    registry.unload(loaded.id)
    with pytest.raises(ModelFolderError, match="no model"):
        registry.unload("a")
    registry.get("a")
    assert loads == ["a", "a"]


def test_a_folder_is_one_source_and_its_stamp_follows_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert canonical_source(str(tmp_path / "." / "m")) == str(folder.resolve())
    assert canonical_source("builtin:em-membranes") == "builtin:em-membranes"
    before = _source_stamp(str(folder))
    (folder / "config.json").write_text('{"changed": 1}')
    assert _source_stamp(str(folder)) != before
