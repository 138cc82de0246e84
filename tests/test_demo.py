"""The README's main job: the headless demo trains, predicts and says where the mask went."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_dlbio.demo import has_display


@pytest.mark.slow
def test_headless_demo_writes_the_mask_and_prints_where(tmp_path):
    out = tmp_path / "demo run"
    env = {**os.environ, "DISPLAY": "", "WAYLAND_DISPLAY": ""}
    completed = subprocess.run(
        [sys.executable, "-m", "napari_dlbio.demo", "--out", str(out), "--time-budget", "8"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    mask = tifffile.imread(out / "mask.tif")
    assert mask.shape == (5, 512, 512)
    assert set(np.unique(mask)) <= {0, 1}
    assert f"Membrane mask: {out / 'mask.tif'}" in completed.stdout
    report = json.loads(
        next(line for line in completed.stdout.splitlines() if line.startswith("{"))
    )
    assert set(report["classes"]) == {"background", "membrane"}
    assert (out / "model" / "config.json").is_file()


def test_without_a_display_the_demo_runs_headless(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not has_display()
    monkeypatch.setenv("DISPLAY", ":99")
    assert has_display()
