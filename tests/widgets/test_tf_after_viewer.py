"""napari's process never imports TensorFlow: a whole session runs through the engine.

A whole session (train, predict, fine-tune, export, draw, exit) runs in a fresh
interpreter, so no earlier test has loaded anything, and it checks ``sys.modules`` at the
end (TensorFlow after Mesa's OpenGL also crashed napari's process: DESIGN.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

APP = Path(__file__).with_name("tf_after_viewer_app.py")


@pytest.mark.skipif(
    sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
    reason="needs a display: run under xvfb-run (scripts/run-tests.sh does)",
)
def test_a_whole_session_never_imports_tensorflow_in_napari(tmp_path: Path) -> None:
    screenshot = tmp_path / "session.png"
    saved = tmp_path / "exported model"
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "xcb")}
    result = subprocess.run(
        [sys.executable, str(APP), str(screenshot)],
        capture_output=True,
        text=True,
        timeout=500,
        env=env,
        check=False,
    )
    crashed = " (segmentation fault)" if result.returncode == -11 else ""
    assert result.returncode == 0, f"exit {result.returncode}{crashed}\n{result.stderr[-3000:]}"
    assert (saved / "model.keras").is_file()
    assert screenshot.is_file()
    assert screenshot.stat().st_size > 10_000
