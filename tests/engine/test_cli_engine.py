"""``dlbio engine`` and ``dlbio predict --engine``, over loopback."""

from __future__ import annotations

import queue
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_dlbio.cli import main
from napari_dlbio.cli.engine import parse_address
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.engine.auth import read_key
from napari_dlbio.engine.client import connect
from napari_dlbio.engine.protocol import Ping, Pong

# Hang guard for the engine's output (s); never a measurement.
WAIT_S = 60.0
DLBIO = [sys.executable, "-c", "import sys; from napari_dlbio.cli import main; sys.exit(main())"]


@dataclass
class RunningEngine:
    """A ``dlbio engine`` process, its port, and its standard error as it comes."""

    process: subprocess.Popen[str]
    host: str
    port: int
    stderr: list[str] = field(default_factory=list)

    def logged(self, text: str) -> bool:
        """Whether the engine writes ``text`` to standard error within the hang guard."""
        for _ in range(int(WAIT_S / 0.05)):
            if any(text in line for line in self.stderr):
                return True
            threading.Event().wait(0.05)
        return False

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(WAIT_S)


def start_engine(key_file: Path, listen: str = ":0") -> RunningEngine:
    process = subprocess.Popen(
        [*DLBIO, "engine", "--listen", listen, "--authkey-file", str(key_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=WAIT_S)
    except queue.Empty:
        process.kill()
        raise
    assert line.startswith("dlbio engine listening on "), line
    host, port = line.split()[-1].rsplit(":", 1)
    engine = RunningEngine(process, host, int(port))
    threading.Thread(target=lambda: engine.stderr.extend(process.stderr), daemon=True).start()
    return engine


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("keys") / "engine.key"


@pytest.fixture(scope="module")
def engine(key_file) -> Iterator[RunningEngine]:
    running = start_engine(key_file)
    yield running
    assert running.stop() == 0
    assert running.logged("dlbio engine: stopped.")


@pytest.fixture(scope="module")
def slices(isbi_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "two.tif"
    volume = tifffile.imread(isbi_dir / "train-volume.tif")[:2, :256, :256]
    tifffile.imwrite(path, volume, photometric="minisblack")
    return path


def test_the_engine_listens_on_localhost_and_makes_a_private_key(engine, key_file) -> None:
    assert engine.host == "127.0.0.1"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(read_key(key_file)) == 64
    assert engine.logged(f"wrote a new key to {key_file}")


def test_predict_on_the_engine_writes_the_local_mask(engine, key_file, slices, tmp_path) -> None:
    remote, local = tmp_path / "remote.tif", tmp_path / "local.tif"
    code = (
        "import sys; from napari_dlbio.cli import main; code = main(sys.argv[1:]); "
        "print('tensorflow loaded:', 'tensorflow' in sys.modules); sys.exit(code)"
    )
    arguments = ["--model", "builtin:em-membranes", "--images", str(slices)]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "predict",
            *arguments,
            "--out",
            str(remote),
            "--engine",
            f"127.0.0.1:{engine.port}",
            "--authkey-file",
            str(key_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "tensorflow loaded: False" in result.stdout
    assert main(["predict", *arguments, "--out", str(local), "--quiet"]) == 0
    assert np.array_equal(tifffile.imread(remote), tifffile.imread(local))


def test_a_wrong_key_is_refused_and_the_engine_serves_on(
    engine, key_file, slices, tmp_path
) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not the key\n")
    result = subprocess.run(
        [
            *DLBIO,
            "predict",
            "--model",
            "builtin:em-membranes",
            "--images",
            str(slices),
            "--out",
            str(tmp_path / "m.tif"),
            "--engine",
            f"127.0.0.1:{engine.port}",
            "--authkey-file",
            str(wrong),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert (
        f"dlbio: error: the engine at 127.0.0.1:{engine.port} refused the key in {wrong}; "
        "use the key file the engine was started with"
    ) in result.stderr
    assert not (tmp_path / "m.tif").exists()
    assert engine.logged("refused a connection from 127.0.0.1:")
    with connect("127.0.0.1", engine.port, read_key(key_file)) as client:
        assert isinstance(client.call(Ping()), Pong)


def test_a_key_file_others_can_read_is_warned_about(tmp_path) -> None:
    key_file = tmp_path / "shared.key"
    key_file.write_text("abc\n")
    key_file.chmod(0o644)
    running = start_engine(key_file, listen="0")
    try:
        assert running.host == "127.0.0.1"
        assert running.logged(f"other users can read the key file {key_file}")
    finally:
        assert running.stop() == 0


@pytest.mark.parametrize(
    "extra",
    [["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:1"], ["--cam", "cams"]],
)
def test_engine_is_refused_beside_other_ways_to_predict(extra, slices, tmp_path, capsys) -> None:
    arguments = ["predict", "--model", "m", "--images", str(slices)]
    arguments += ["--out", str(tmp_path / "m.tif"), "--engine", "127.0.0.1:1", *extra]
    assert main(arguments) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_an_engine_that_is_not_there_is_one_clear_line(slices, tmp_path, capsys) -> None:
    arguments = ["predict", "--model", "m", "--images", str(slices)]
    arguments += ["--out", str(tmp_path / "m.tif"), "--engine", "127.0.0.1:1"]
    assert main([*arguments, "--authkey-file", str(tmp_path / "none")]) == 2
    assert "the key file" in capsys.readouterr().err
    key_file = tmp_path / "key"
    key_file.write_text("k\n")
    assert main([*arguments, "--authkey-file", str(key_file)]) == 2
    assert "nothing is listening at 127.0.0.1:1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "listening", "address"),
    [
        ("node7:8790", False, ("node7", 8790)),
        (":0", True, ("127.0.0.1", 0)),
        ("0", True, ("127.0.0.1", 0)),
        ("9000", False, ("127.0.0.1", 9000)),
        ("0.0.0.0:9000", True, ("0.0.0.0", 9000)),
    ],
)
def test_addresses_default_to_localhost(text, listening, address) -> None:
    assert parse_address(text, listening=listening) == address


@pytest.mark.parametrize(("text", "listening"), [(":0", False), ("host", True), ("h:99999", True)])
def test_impossible_addresses_are_refused(text, listening) -> None:
    with pytest.raises(InputDataError, match="no address"):
        parse_address(text, listening=listening)
