"""The README's main job: the headless demo predicts with the built-in model, fine-tunes it,
and says how good each mask is and where it is."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_dlbio import cli
from napari_dlbio._reader import get_reader
from napari_dlbio._sample_data import ISBI_IMAGE
from napari_dlbio.demo import has_display
from napari_dlbio.demo import main as demo_main

# TensorFlow's C++ log lines and what they say (see tests/test_cli_segmentation.py).
TF_LOG = re.compile(
    r"^[IWEF]\d{4} |^\d{4}-\d\d-\d\d .*: [IWEF] \S+:\d+\] |cuInit|absl::InitializeLog|oneDNN",
    re.MULTILINE,
)


@pytest.mark.slow
def test_headless_demo_prints_scores_paths_and_the_napari_command(tmp_path):
    out = tmp_path / "demo run"
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env |= {"DISPLAY": "", "WAYLAND_DISPLAY": ""}
    completed = subprocess.run(
        [sys.executable, "-m", "napari_dlbio.demo", "--out", str(out), "--time-budget", "4"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name in ("mask.tif", "fine-tuned mask.tif"):
        mask = tifffile.imread(out / name)
        assert mask.shape == (5, 512, 512)
        assert set(np.unique(mask)) <= {0, 1}
    assert (out / "fine-tuned model" / "config.json").is_file()
    cells = tifffile.imread(out / "objects" / "cells.tif")
    assert cells.shape == (5, 512, 512)
    assert cells.max() > 5 * 50  # an ISBI section holds well over 50 cells

    # Two tables: the built-in model as shipped, then fine-tuned; it knows membranes at once.
    lines = completed.stdout.splitlines()
    assert len(re.findall(r"^class +IoU +Dice +pixels$", completed.stdout, re.MULTILINE)) == 2
    scores = re.findall(r"^membrane +(\d\.\d{4}) +\d\.\d{4} +\d+$", completed.stdout, re.MULTILINE)
    assert len(scores) == 2
    assert float(scores[0]) > 0.6
    # The object scores follow each table: the cells' V_rand.
    assert len(re.findall(r"^cells .* V_rand 0\.9\d{3}", completed.stdout, re.MULTILINE)) == 2
    assert "builtin:em-membranes" in completed.stdout
    assert f"  Fine-tuned model folder: {out / 'fine-tuned model'}" in lines
    assert f"  Membrane mask: {out / 'mask.tif'}" in lines
    assert f"  Probabilities: {out / 'probabilities.tif'}" in lines
    assert not any(line.lstrip().startswith("{") for line in lines)  # no JSON without --json

    command = shlex.split(next(line for line in lines if "--plugin napari-dlbio" in line))
    assert command[-4:] == ["--plugin", "napari-dlbio", str(ISBI_IMAGE), str(out / "mask.tif")]
    assert command[:-4] in (["napari"], [sys.executable, "-m", "napari"])
    # What napari does with --plugin napari-dlbio: the mask opens as labels.
    mask_path = str(out / "mask.tif")
    assert [layer_type for *_, layer_type in get_reader(mask_path)(mask_path)] == ["labels"]

    assert not TF_LOG.findall(completed.stderr), completed.stderr


def test_json_ends_the_headless_demo_and_verbose_reaches_every_command(
    tmp_path, monkeypatch, capsys
):
    commands: list[list[str]] = []

    def dlbio(argv: list[str]) -> int:
        commands.append(argv)
        if "evaluate" in argv:
            iou = 0.5 if argv[argv.index("--model") + 1].startswith("builtin:") else 0.7
            report = {"pixel_accuracy": 0.9, "classes": {"membrane": {"iou": iou}}}
            sys.stdout.write(json.dumps(report) + "\n" if "--json" in argv else "a table\n")
        return 0

    monkeypatch.setattr(cli, "main", dlbio)
    assert demo_main(["--headless", "--json", "--verbose", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    reports = json.loads(lines[-1])
    assert reports["built_in"]["classes"]["membrane"]["iou"] == 0.5
    assert reports["fine_tuned"]["classes"]["membrane"]["iou"] == 0.7
    assert "a table" not in lines
    assert f"  Membrane mask: {tmp_path / 'mask.tif'}" in lines
    assert [argv[:2] for argv in commands] == [
        ["--verbose", "predict"],
        ["--verbose", "evaluate"],
        ["--verbose", "train"],
        ["--verbose", "predict"],
        ["--verbose", "evaluate"],
    ]
    train = commands[2]
    assert train[train.index("--from") + 1] == "builtin:em-membranes"


def test_without_a_display_the_demo_runs_headless(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not has_display()
    monkeypatch.setenv("DISPLAY", ":99")
    assert has_display()
