"""What the widgets' model combo boxes offer: the current model, a folder, a new network and
the built-in models ("built-in em-membranes"), and which model a choice means."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QComboBox, QWidget

from napari_dlbio._widgets._common import connect_while_alive
from napari_dlbio._widgets._session import Session
from napari_dlbio.core.builtin_models import BUILTIN_PREFIX, BuiltinModel, builtin_models
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import DlbioError
from napari_dlbio.engine.protocol import ModelHandle

NEW_NETWORK, CURRENT_MODEL, MODEL_FOLDER = "a new network", "the current model", "a model folder"
CHOICE_PREFIX = "built-in "
_NO_MODEL = {
    Task.SEGMENTATION: "there is no segmentation model yet; train one on this image (Train) "
    "or choose a model folder.",
    Task.CLASSIFICATION: "there is no classifier yet (a segmentation model cannot classify "
    "images); train one on this leaf stack (Train) or choose a model folder.",
}


def builtin_choices(task: Task) -> list[str]:
    """The combo-box texts of the built-in models of ``task``."""
    return [CHOICE_PREFIX + model.name for model in builtin_models() if model.task is task]


def builtin_reference(choice: str) -> str | None:
    """``builtin:NAME`` for a built-in model's choice, ``None`` for any other choice."""
    if not choice.startswith(CHOICE_PREFIX):
        return None
    return BUILTIN_PREFIX + choice.removeprefix(CHOICE_PREFIX)


def builtin_record(choice: str) -> BuiltinModel | None:
    """The package's record of a built-in model's choice (read, not loaded or checked)."""
    reference = builtin_reference(choice)
    return next((model for model in builtin_models() if model.reference == reference), None)


def model_source(choice: str, folder: str, session: Session, task: Task) -> str:
    """The model a combo box's ``choice`` means, as the engine loads it.

    A model folder or package (the text of the folder field, ``folder``), a built-in model
    (``builtin:NAME``) or else the session's current model of ``task``.

    Raises
    ------
    DlbioError
        When the folder field is empty, or the session has no current model of ``task``.
    """
    if choice == MODEL_FOLDER:
        if not folder:
            raise DlbioError("choose a model folder or a bioimage.io package (.zip).")
        return str(Path(folder).expanduser().resolve())
    builtin = builtin_reference(choice)
    if builtin is not None:
        return builtin
    model = session.current(task)
    if model is None:
        raise DlbioError(_NO_MODEL[task])
    return model.source


def set_choices(combo: QComboBox, choices: Sequence[str], preferred: str | None = None) -> None:
    """Show ``choices`` in ``combo``, keeping the chosen one when it is still there.

    Otherwise ``preferred`` (or the first choice) is chosen.  ``currentIndexChanged``
    fires once, and only when the chosen text changes.
    """
    if [combo.itemText(i) for i in range(combo.count())] == list(choices):
        return
    chosen = combo.currentText()
    keep = chosen if chosen in choices else preferred
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(choices))
    combo.setCurrentIndex(max(combo.findText(keep), 0) if keep is not None else 0)
    combo.blockSignals(False)
    if combo.currentText() != chosen:
        combo.currentIndexChanged.emit(combo.currentIndex())


class StartPicker(QComboBox):
    """Where Correct & fine-tune's next network starts: the current segmentation model, a
    built-in model, or a new network.

    Until the user picks, the choice follows the session: the current model when there is
    one, else the first built-in model.  A pick calls ``on_pick`` (the tuner restarts).
    """

    def __init__(
        self, session: Session, on_pick: Callable[[], None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._session = session
        self._on_pick = on_pick
        self._picked = False
        self.setToolTip("The network the next burst starts from; later bursts go on from it.")
        self.activated.connect(self._pick)
        connect_while_alive(session.models_changed, self.refresh, self)
        self.refresh()

    def start(self) -> tuple[ModelHandle | None, BuiltinModel | None]:
        """The chosen session model or built-in model (both ``None``: a new network)."""
        choice = self.currentText()
        model = self._session.current(Task.SEGMENTATION) if choice == CURRENT_MODEL else None
        return model, builtin_record(choice)

    def refresh(self, *_: Any) -> None:
        """Offer the starts there are now; follow the session until the user picks."""
        builtins = builtin_choices(Task.SEGMENTATION)
        has_model = self._session.current(Task.SEGMENTATION) is not None
        preferred = CURRENT_MODEL if has_model or not builtins else builtins[0]
        set_choices(self, [CURRENT_MODEL, *builtins, NEW_NETWORK], preferred)
        if not self._picked:
            self.setCurrentText(preferred)

    def _pick(self, *_: Any) -> None:
        self._picked = True
        self._on_pick()
