"""``dlbio export --format bioimageio``: a package from a built-in model, nothing overwritten."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from napari_dlbio.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_writes_a_bioimageio_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("bioimageio.spec", reason='needs pip install "napari-dlbio[bioimageio]"')
    out = tmp_path / "leaves.zip"
    code, stdout, stderr = _run(
        capsys, "export", "--model", "builtin:plantvillage-15", "--format", "bioimageio",
        "--out", out,
    )  # fmt: skip
    assert code == 0, stderr
    assert str(out) in stdout
    assert "bioimageio test" in stdout
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
    assert {"rdf.yaml", "README.md", "cover.png", "model.h5", "test_input.npy"} <= names
    assert [path.name for path in tmp_path.iterdir()] == ["leaves.zip"]


def test_export_refuses_an_existing_out_and_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine.zip"
    out.write_bytes(b"my own package")
    code, stdout, stderr = _run(capsys, "export", "--model", "builtin:em-membranes", "--out", out)
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("dlbio: error: ")
    assert "already exists" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert out.read_bytes() == b"my own package"


def test_export_names_the_problem_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, stderr = _run(
        capsys, "export", "--model", "builtin:em-membranes", "--out", tmp_path / "model.txt"
    )
    assert code == 2
    assert ".zip" in stderr
    assert len(stderr.strip().splitlines()) == 1
    code, _, stderr = _run(
        capsys, "export", "--model", tmp_path / "no such model", "--out", tmp_path / "m.zip"
    )
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_starts_without_bioimageio_or_tensorflow() -> None:
    code = (
        "import sys\n"
        "from napari_dlbio.cli import build_parser\n"
        "build_parser().parse_args(['export', '--model', 'm', '--out', 'o.zip'])\n"
        "print(sorted(m for m in ('bioimageio', 'tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
