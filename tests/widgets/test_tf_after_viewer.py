"""Regression: TensorFlow and Mesa's OpenGL share napari's process without crashing.

On Mesa OpenGL a plain ``import tensorflow`` after the canvas exists ends the process with a
segmentation fault, and so did the first drawing of new canvas text after TensorFlow had
loaded (models/_tf.py says why).  A whole session (train, predict, fine-tune, draw, exit)
runs in a fresh interpreter, so no earlier test has loaded anything before the canvas.
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
def test_train_predict_fine_tune_and_draw_in_a_fresh_viewer(tmp_path: Path) -> None:
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
