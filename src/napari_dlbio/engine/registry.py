"""The engine's loaded models, shared by every connection: each loaded once, by id."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from napari_dlbio.core.errors import ModelFolderError


@dataclass(frozen=True)
class LoadedModel:
    """A model in the engine's memory: its ``id``, the ``source`` it came from, the
    ``stamp`` of that source's files when it was loaded, and the ``ModelFolder``."""

    id: str
    source: str
    stamp: Hashable
    folder: Any


class ModelRegistry:
    """Models by id, loaded once per source and again only when its files change.

    Parameters
    ----------
    load
        Loads a source (model folder, ``builtin:NAME``, package) into a ``ModelFolder``.
    stamp
        What identifies a source's current files (their modification times, say); a
        model whose stamp changed is loaded again, under a new id.
    """

    def __init__(self, load: Callable[[str], Any], stamp: Callable[[str], Hashable]) -> None:
        self._load = load
        self._stamp = stamp
        self._by_id: dict[str, LoadedModel] = {}
        self._by_source: dict[str, LoadedModel] = {}
        self._ids = (f"model-{n}" for n in itertools.count(1))
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._tuners: dict[str, Any] = {}
        self._tuner_ids = (f"tuner-{n}" for n in itertools.count(1))

    def keep_tuner(self, tuner: Any) -> str:
        """Keep a fine-tuner between bursts; return its id."""
        with self._lock:
            tuner_id = next(self._tuner_ids)
            self._tuners[tuner_id] = tuner
            return tuner_id

    def tuner(self, tuner_id: str) -> Any:
        """The fine-tuner ``tuner_id``.

        Raises
        ------
        ModelFolderError
            When this engine has no such tuner (it was started after the tuner's).
        """
        with self._lock:
            tuner = self._tuners.get(tuner_id)
        if tuner is None:
            raise ModelFolderError(
                "the fine-tuned network lived in an engine that stopped; the next burst "
                "starts again from the chosen model"
            )
        return tuner

    def load(self, source: str) -> LoadedModel:
        """The model of ``source``, loaded now if it is not in memory or its files changed.

        Two connections asking for the same source at once load it once.
        """
        stamp = self._stamp(source)
        with self._lock:
            loaded = self._by_source.get(source)
            if loaded is not None and loaded.stamp == stamp:
                return loaded
            source_lock = self._loading.setdefault(source, threading.Lock())
        with source_lock:
            with self._lock:
                loaded = self._by_source.get(source)
                if loaded is not None and loaded.stamp == stamp:
                    return loaded
            folder = self._load(source)
            with self._lock:
                old = self._by_source.get(source)
                if old is not None:
                    del self._by_id[old.id]
                loaded = LoadedModel(next(self._ids), source, stamp, folder)
                self._by_source[source] = loaded
                self._by_id[loaded.id] = loaded
                return loaded

    def add(self, source: str, folder: Any) -> LoadedModel:
        """Keep ``folder``, a model this engine made and wrote to ``source``, under a new id
        (a model loaded from ``source`` before is replaced)."""
        with self._lock:
            old = self._by_source.get(source)
            if old is not None:
                del self._by_id[old.id]
            loaded = LoadedModel(next(self._ids), source, self._stamp(source), folder)
            self._by_source[source] = loaded
            self._by_id[loaded.id] = loaded
            return loaded

    def get(self, model: str) -> LoadedModel:
        """The model with id ``model``, or the model of the source ``model`` (loaded now
        if needed)."""
        with self._lock:
            loaded = self._by_id.get(model)
        return loaded if loaded is not None else self.load(model)

    def unload(self, model: str) -> None:
        """Forget the model with id or source ``model``; jobs using it finish with it.

        Raises
        ------
        ModelFolderError
            When no such model is loaded.
        """
        with self._lock:
            loaded = self._by_id.get(model) or self._by_source.get(model)
            if loaded is None:
                raise ModelFolderError(f"no model {model!r} is loaded in the engine")
            del self._by_id[loaded.id]
            del self._by_source[loaded.source]
