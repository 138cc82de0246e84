"""Regression: TensorFlow first imported after napari's OpenGL canvas must not crash.

On Mesa OpenGL a plain ``import tensorflow`` after the canvas exists ends the process with a
segmentation fault (DESIGN.md, "Known hazard"); the widgets import the models lazily,
through ``models/_tf.py``.  The session runs in a fresh interpreter, so no earlier test has
imported TensorFlow before the canvas.
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
def test_train_and_predict_through_the_widgets_in_a_fresh_viewer(tmp_path: Path) -> None:
    screenshot = tmp_path / "session.png"
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
    assert screenshot.is_file()
    assert screenshot.stat().st_size > 10_000
