"""The start every job-running dock widget of the plugin shares."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QWidget

from napari_dlbio._widgets._session import session_for
from napari_dlbio._widgets._worker import Job


class JobWidget(QWidget):
    """A dock widget that runs background jobs on the layers of one viewer.

    Parameters
    ----------
    napari_viewer
        The viewer the widget is docked in.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.job: Job | None = None
