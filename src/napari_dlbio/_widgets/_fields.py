"""Form fields over the viewer's layers and the file system: a layer drop-down that follows
the layer list, and a path field with its file dialog."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from napari.layers import Layer
from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QWidget

from napari_dlbio._layers import ROLE_KEY
from napari_dlbio._widgets._common import connect_while_alive


class LayerCombo(QComboBox):
    """A drop-down of the viewer's layers of one type, kept up to date by name.

    Parameters
    ----------
    viewer
        The napari viewer.
    layer_type
        ``napari.layers.Image`` or ``napari.layers.Labels``.
    prefer
        Layers to choose by default (the newest one), e.g. the user's own annotation rather
        than a ground truth that came with the sample, until the user picks a layer.
    """

    def __init__(
        self,
        viewer: Any,
        layer_type: type[Layer],
        parent: QWidget | None = None,
        *,
        prefer: Callable[[Layer], bool] | None = None,
    ):
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._prefer = prefer
        self._picked = False
        self._renamable: weakref.WeakSet[Layer] = weakref.WeakSet()
        self.activated.connect(self._picked_by_user)
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            connect_while_alive(event, self.refresh, self)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        current = self.currentText()
        layers = [layer for layer in self._viewer.layers if isinstance(layer, self._type)]
        names = [layer.name for layer in layers]
        for layer in layers:
            if layer not in self._renamable:
                connect_while_alive(layer.events.name, self.refresh, self)
                self._renamable.add(layer)
        choice = current if current in names else None
        preferred = [layer.name for layer in layers if self._prefer and self._prefer(layer)]
        if preferred and not self._picked:
            choice = preferred[-1]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if choice is not None:
            self.setCurrentText(choice)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentIndexChanged.emit(self.currentIndex())

    def layer(self) -> Layer | None:
        """The chosen layer, or ``None`` when there is none."""
        name = self.currentText()
        if name and name in self._viewer.layers:
            return self._viewer.layers[name]
        return None

    def select(self, layer: Layer) -> None:
        """Choose ``layer`` (as if the user had picked it)."""
        self._picked = True
        self.setCurrentText(layer.name)

    def _picked_by_user(self, *_: Any) -> None:
        self._picked = True


def has_role(*roles: str) -> Callable[[Layer], bool]:
    """A ``prefer`` test of :class:`LayerCombo`: layers the plugin made in one of ``roles``."""
    return lambda layer: layer.metadata.get(ROLE_KEY) in roles


#: The file-dialog filter of bioimage.io model packages.
PACKAGE_FILTER = "bioimage.io package (*.zip)"


class PathEdit(QWidget):
    """A path field with a "..." button that opens a file or folder dialog.

    Parameters
    ----------
    folder
        Whether a folder (rather than a file) is chosen.
    save
        Whether the dialog asks for a new file name.
    package
        Whether a bioimage.io model package (``.zip``) may be chosen: with ``folder``, a
        second button ("package...") opens a file dialog for one beside the folder dialog
        ("folder..."); without, the file dialog shows ``.zip`` files and a chosen name gets
        the suffix.
    """

    def __init__(
        self,
        folder: bool,
        save: bool = True,
        parent: QWidget | None = None,
        *,
        package: bool = False,
    ):
        super().__init__(parent)
        self._folder = folder
        self._save = save
        self._package = package
        self.edit = QLineEdit()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        # Two buttons rather than one dialog for both: Qt's file dialogs choose either
        # files or folders, and the native ones ignore the options that would mix them.
        self.browse_button = QPushButton("folder..." if folder and package else "...")
        self.browse_button.clicked.connect(self._browse)
        layout.addWidget(self.browse_button)
        self.package_button: QPushButton | None = None
        if folder and package:
            self.browse_button.setToolTip("Choose a model folder")
            self.package_button = QPushButton("package...")
            self.package_button.setToolTip("Choose a bioimage.io model package (.zip)")
            self.package_button.clicked.connect(self._browse_package)
            layout.addWidget(self.package_button)
        else:
            self.browse_button.setMaximumWidth(32)

    def text(self) -> str:
        """The path typed or chosen (stripped; empty when none)."""
        return self.edit.text().strip()

    def setText(self, text: str) -> None:
        """Set the path."""
        self.edit.setText(text)

    def _browse(self) -> None:
        file_filter = PACKAGE_FILTER if self._package else ""
        if self._folder:
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.text())
        elif self._save:
            path, _ = QFileDialog.getSaveFileName(self, "Save as", self.text(), file_filter)
            if path and self._package and not path.lower().endswith(".zip"):
                path += ".zip"
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Open", self.text(), file_filter)
        if path:
            self.edit.setText(path)

    def _browse_package(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a bioimage.io package", self.text(), PACKAGE_FILTER
        )
        if path:
            self.edit.setText(path)
