"""The layering of DESIGN.md, checked on the source rather than remembered.

core/ is pure; models/ and engine/ never touch napari or Qt; TensorFlow and Keras enter
through models/_tf.py only, and into the engine through its handlers only; importing the
package, its reader/writer, its samples and the engine's client stays light.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_dlbio"
TF_ENTRY = PACKAGE / "models" / "_tf.py"

GUI = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt"}
TENSORFLOW = {"tensorflow", "keras"}


def imported_roots(source: str) -> set[str]:
    """Top-level names of every absolute import in ``source``, lazy ones included.

    ``importlib.import_module("x")`` and ``__import__("x")`` with a literal name count too.
    """
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and _called_name(node.func) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def _called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _violations(files: list[Path], forbidden: set[str]) -> list[str]:
    found = []
    for file in files:
        bad = imported_roots(file.read_text(encoding="utf-8")) & forbidden
        if bad:
            found.append(f"{file.relative_to(PACKAGE)} imports {sorted(bad)}")
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import tensorflow as tf", {"tensorflow"}),
        ("def f():\n    from keras import layers", {"keras"}),
        ("import importlib\nimportlib.import_module('PyQt5.QtCore')", {"importlib", "PyQt5"}),
        ("from napari.layers import Labels", {"napari"}),
        ("from . import io\nfrom napari_dlbio.models import _tf", {"napari_dlbio"}),
    ],
)
def test_the_checker_sees_imports(source: str, expected: set[str]) -> None:
    assert imported_roots(source) == expected


def test_core_is_pure() -> None:
    assert _violations(_modules(PACKAGE / "core"), GUI | TENSORFLOW) == []


def test_models_never_import_napari_or_qt() -> None:
    assert _violations(_modules(PACKAGE / "models"), GUI) == []


def test_only_the_tf_module_imports_tensorflow() -> None:
    others = [f for f in _modules(PACKAGE) if f != TF_ENTRY]
    assert TF_ENTRY.is_file()
    assert _violations(others, TENSORFLOW) == []


def test_adapters_import_no_qt() -> None:
    adapters = [
        PACKAGE / name
        for name in ("_reader.py", "_writer.py", "_sample_data.py", "_layers.py")
        if (PACKAGE / name).is_file()
    ]
    assert len(adapters) >= 3
    assert _violations(adapters, GUI - {"napari"} | TENSORFLOW) == []


def test_package_reader_writer_and_samples_do_not_load_tensorflow() -> None:
    code = (
        "import sys\n"
        "import napari_dlbio, napari_dlbio._reader, napari_dlbio._writer\n"
        "import napari_dlbio._sample_data as samples\n"
        "samples.make_isbi_sample(); samples.make_leaf_sample()\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'qtpy', 'PyQt5')"
        " if m in sys.modules)\n"
        "print('loaded:', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded: []"


def _imports_the_models_package(file: Path) -> bool:
    """Whether ``file`` imports napari_dlbio.models (or a module of it), lazily or not."""
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            module = node.module or ""
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        if any(name == "napari_dlbio.models" or name.startswith("napari_dlbio.models.")
               for name in names):  # fmt: skip
            return True
    return False


def test_napari_s_side_never_uses_the_models_package() -> None:
    """Widgets and napari adapters reach models through the engine only, so napari's
    process never imports TensorFlow (DESIGN.md)."""
    adapters = [
        PACKAGE / name
        for name in ("_reader.py", "_writer.py", "_sample_data.py", "_object_layers.py")
    ]
    napari_side = [*_modules(PACKAGE / "_widgets"), *adapters, PACKAGE / "_layers.py"]
    assert len(napari_side) > 20
    assert [f.name for f in napari_side if _imports_the_models_package(f)] == []
    assert _violations(_modules(PACKAGE / "_widgets"), TENSORFLOW) == []


def test_the_engine_never_imports_napari_or_qt() -> None:
    engine = [*_modules(PACKAGE / "engine"), PACKAGE / "cli" / "engine.py"]
    assert len(engine) >= 5
    assert _violations(engine, GUI) == []


def test_only_the_engines_handlers_use_the_models_package() -> None:
    """The rest of the engine (and its client) must stay importable without TensorFlow."""
    users = [
        file.name
        for file in _modules(PACKAGE / "engine")
        if any(
            isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("napari_dlbio.models")
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
        )
    ]
    assert users == ["handlers.py"]


def test_the_engine_and_its_client_do_not_load_tensorflow() -> None:
    code = (
        "import sys\n"
        "import napari_dlbio.engine.client, napari_dlbio.engine.local\n"
        "import napari_dlbio.engine.server, napari_dlbio.engine.child, napari_dlbio.cli.engine\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'napari', 'qtpy', 'PyQt5')"
        " if m in sys.modules)\n"
        "print('loaded:', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded: []"
