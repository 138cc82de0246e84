"""Benchmarks that tools read still run and keep the JSON shape their issues ask for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_interactive_loop_reports_every_round_in_the_agreed_shape(isbi_dir: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "interactive_loop.py"),
            "--rounds=1",
            "--seconds=1",
            f"--data={isbi_dir.parent}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    rounds = figures["rounds"]
    assert [row["round"] for row in rounds] == [0, 1]
    for row in rounds:
        assert set(row) >= {"round", "annotated_percent", "seconds", "heldout_iou"}
        assert 0.0 <= row["heldout_iou"] <= 1.0
        assert row["seconds"] >= 1.0  # at least the burst
    # Round 1 painted at most the 5 % brush budget on top of round 0's scribbles.
    assert 0 < rounds[1]["annotated_percent"] - rounds[0]["annotated_percent"] <= 5.0


def test_instances_benchmark_prints_the_object_figures(isbi_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "instances.py"),
            f"--data={isbi_dir.parent}",
            f"--work={tmp_path}",  # no held-out models there: the shipped ones are used
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "seen in training" in result.stdout
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("cells_f1", "cells_v_rand", "cells_v_info", "mitochondria_f1"):
        assert 0.5 <= figures[key] <= 1.0
    assert figures["object_step_s_per_slice"] > 0
