"""TensorFlow's start-up log lines are held back; nothing else written meanwhile is lost."""

from __future__ import annotations

import os
import sys

import pytest

from napari_dlbio.models._tf import _startup_logs_held_back

TF_LINES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796478350.580705   12863 cudart_stub.cc:31] Could not find cuda drivers\n"
    b"E0000 00:00:1796478354.530274   12863 cuda_platform.cc:52] failed call to cuInit: 303\n"
    b"2025-01-31 12:00:00.123456: W tensorflow/core/util/port.cc:113] oneDNN custom ops\n"
)


def test_only_tensorflows_lines_are_held_back(capfd):
    with _startup_logs_held_back():
        os.write(2, TF_LINES + b"another library's message\n")
        sys.stderr.write("a message of ours\n")
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == ["a message of ours", "another library's message"]
    os.write(2, b"standard error works as before\n")
    assert capfd.readouterr().err == "standard error works as before\n"


def failing_start_up() -> None:
    with _startup_logs_held_back():
        os.write(2, TF_LINES)
        raise ImportError("libcudnn.so.9: cannot open shared object file")


def test_a_failed_start_up_shows_everything_it_wrote(capfd):
    with pytest.raises(ImportError, match="libcudnn"):
        failing_start_up()
    assert capfd.readouterr().err == TF_LINES.decode()
