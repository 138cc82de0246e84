"""What the dock widgets of one viewer share: the engine and every model of the session.

The models live in the engine (:mod:`._engine`); the session keeps their handles.  Each
task (segmentation, classification) has its own current model, which Predict, Correct &
fine-tune and a later training use.  Every model trained, fine-tuned or loaded in the
session stays in its list, so a model that is no longer current is never lost: a stopped
training run, a folder loaded for the other task.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psygnal import Signal

from napari_dlbio._widgets._engine import SessionEngine
from napari_dlbio.core.builtin_models import builtin_name
from napari_dlbio.core.config import Task
from napari_dlbio.engine.protocol import ModelHandle

_TASK_NAMES = {Task.SEGMENTATION: "segmentation", Task.CLASSIFICATION: "classifier"}


@dataclass
class SessionModel:
    """One model of the session and how it came to be, in words (``label``)."""

    model: ModelHandle
    label: str


class Session:
    """The models of one viewer; ``models_changed`` fires when one is added or made current."""

    models_changed = Signal()

    def __init__(self) -> None:
        self.engine = SessionEngine()
        self._entries: list[SessionModel] = []
        self._current: dict[Task, ModelHandle] = {}

    @property
    def entries(self) -> tuple[SessionModel, ...]:
        """Every model of the session, oldest first."""
        return tuple(self._entries)

    def models(self, task: Task | None = None) -> list[ModelHandle]:
        """The session's models of ``task`` (of every task when ``None``), newest first."""
        return [e.model for e in reversed(self._entries) if task in (None, e.model.task)]

    def current(self, task: Task) -> ModelHandle | None:
        """The current model of ``task``, or ``None`` before one is trained or loaded."""
        return self._current.get(task)

    def add(
        self,
        model: ModelHandle,
        how: str,
        *,
        make_current: bool = True,
        replacing: ModelHandle | None = None,
    ) -> None:
        """Keep ``model`` in the session, described by ``how`` (e.g. "trained, best epoch 6").

        Parameters
        ----------
        model
            The model; adding one that is already kept only updates its description.
        how
            How it came to be, for the lists the user picks from.
        make_current
            Whether it becomes the current model of its task.
        replacing
            A model of the session that ``model`` supersedes in the list (a fine-tuner's
            previous burst): it takes its place instead of adding a row.
        """
        entry = self._entry(model) or self._entry(replacing)
        label = f"{_TASK_NAMES.get(model.task, model.task.value)} {self._number(entry)}: {how}"
        if entry is None:
            self._entries.append(SessionModel(model, label))
        else:
            if entry.model != model and self._current.get(model.task) == entry.model:
                self._current[model.task] = model
            entry.model, entry.label = model, label
        if make_current:
            self._current[model.task] = model
        self.models_changed.emit()

    def make_current(self, model: ModelHandle) -> None:
        """Make a model of the session the current one of its task."""
        if self._entry(model) is None:
            raise ValueError("only a model of the session can be made current")
        self._current[model.task] = model
        self.models_changed.emit()

    def saved(self, model: ModelHandle, folder: Path) -> None:
        """``model`` was saved to ``folder``: it is listed with it, and loads from it."""
        entry = self._entry(model)
        if entry is not None:
            saved = dataclasses.replace(model, source=str(folder), path=folder)
            if self._current.get(model.task) == model:
                self._current[model.task] = saved
            entry.model = saved
        self.models_changed.emit()

    def label(self, model: ModelHandle) -> str:
        """How the session lists ``model``, with where it is saved."""
        entry = self._entry(model)
        text = entry.label if entry is not None else f"{model.task.value} model"
        if builtin_name(model.path) is not None:
            where = "shipped with napari-dlbio"
        elif model.path is not None:
            where = f"saved in {model.path.name}"
        else:
            where = "not saved"
        return f"{text} ({where})"

    def describe(self, task: Task) -> str:
        """The current model of ``task`` in a few words, for the widgets' labels."""
        model = self._current.get(task)
        if model is None:
            return "none yet (train one, or load a model folder)"
        names = list(getattr(model.config, "class_names", ()))
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        return f"{self.label(model)}; {len(names)} classes: {shown}"

    def _entry(self, model: ModelHandle | None) -> SessionModel | None:
        return next((e for e in self._entries if model is not None and e.model == model), None)

    def _number(self, entry: SessionModel | None) -> int:
        if entry is not None:
            return self._entries.index(entry) + 1
        return len(self._entries) + 1


_sessions: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The session shared by the widgets docked in ``viewer`` (created on first use)."""
    session = _sessions.get(viewer)
    if session is None:
        session = _sessions[viewer] = Session()
    return session
