"""What the dock widgets of one viewer share: the current model, kept in memory.

Train puts the model it trained here, so Predict and a later fine-tuning use it without a
round trip through the disk; Predict and Export put a model loaded from a folder here too.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from psygnal import Signal

if TYPE_CHECKING:
    from napari_dlbio.models.store import ModelFolder


class Session:
    """The current model of one viewer; ``model_changed`` fires when it is replaced."""

    model_changed = Signal(object)

    def __init__(self) -> None:
        self._model: ModelFolder | None = None

    @property
    def model(self) -> ModelFolder | None:
        """The current model, or ``None`` before one is trained or loaded."""
        return self._model

    def set_model(self, model: ModelFolder) -> None:
        """Make ``model`` the current one and tell the widgets."""
        self._model = model
        self.model_changed.emit(model)

    def describe(self) -> str:
        """The current model in a few words, for the widgets' labels."""
        model = self._model
        if model is None:
            return "none yet (train one, or load a model folder)"
        names = list(getattr(model.config, "class_names", ()))
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        where = f" from {model.path.name}" if model.path is not None else " (not saved)"
        return f"{model.task.value}, {len(names)} classes: {shown}{where}"


_sessions: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The session shared by the widgets docked in ``viewer`` (created on first use)."""
    session = _sessions.get(viewer)
    if session is None:
        session = _sessions[viewer] = Session()
    return session
