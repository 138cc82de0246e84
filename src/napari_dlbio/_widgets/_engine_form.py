"""Where the session's engine runs: "this computer", or one started elsewhere with
``dlbio engine --listen HOST:PORT`` (through an SSH tunnel, say), reached with its key file.

A magicgui form: its fields are plain values (a choice, an address, a file), which is what
magicgui builds well.
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton
from napari.utils.notifications import show_error, show_info

from napari_dlbio._widgets._engine import THIS_COMPUTER, SessionEngine
from napari_dlbio.core.errors import DlbioError

REMOTE = "connect to host:port"


class EngineForm(Container):
    """Choose the session's engine: this computer, or a remote one (address + key file)."""

    def __init__(self, engine: SessionEngine) -> None:
        self._engine = engine
        self.choice = ComboBox(label="Engine", choices=[THIS_COMPUTER, REMOTE])
        self.address = LineEdit(label="Host:port", value="127.0.0.1:7878")
        self.key_file = FileEdit(label="Key file", mode="r", value=Path("~/.dlbio/key"))
        self.use_button = PushButton(text="Use this engine")
        self.status = Label(value=f"Engine: {engine.where}")
        super().__init__(
            widgets=[self.choice, self.address, self.key_file, self.use_button, self.status]
        )
        self.choice.changed.connect(self._show_fields)
        self.use_button.changed.connect(self.apply)
        self._show_fields()

    def apply(self, *_: object) -> bool:
        """Switch to the chosen engine; say so, or why not.  Returns whether it worked."""
        try:
            if self.choice.value == THIS_COMPUTER:
                self._engine.use_local()
            else:
                host, _, port = str(self.address.value).rpartition(":")
                if not host or not port.isdigit():
                    raise DlbioError("type the engine's address as host:port, e.g. 127.0.0.1:7878")
                key = Path(str(self.key_file.value)).expanduser()
                self._engine.connect(host, int(port), key)
        except DlbioError as error:
            show_error(f"Cannot use that engine: {error}")
            return False
        self.status.value = f"Engine: {self._engine.where}"
        show_info(f"The widgets now use the engine on {self._engine.where}.")
        return True

    def _show_fields(self, *_: object) -> None:
        remote = self.choice.value == REMOTE
        self.address.visible = remote
        self.key_file.visible = remote
