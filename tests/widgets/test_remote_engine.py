"""The widgets use an engine on another machine: here one listening on a loopback port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from napari_dlbio._widgets.predict_widget import CURRENT_SLICE, PredictWidget
from napari_dlbio._widgets.train_widget import TrainWidget
from napari_dlbio.core.events import RunState
from napari_dlbio.engine.protocol import Ping

pytestmark = pytest.mark.gui

DLBIO = [sys.executable, "-c", "import sys; from napari_dlbio.cli import main; sys.exit(main())"]


@pytest.fixture
def remote_engine(tmp_path) -> Iterator[tuple[str, object]]:
    """``dlbio engine`` on a free loopback port: (its address, its key file)."""
    key_file = tmp_path / "key"
    process = subprocess.Popen(
        [*DLBIO, "engine", "--listen", "127.0.0.1:0", "--authkey-file", str(key_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("dlbio engine listening on "), line
        yield line.rsplit(" ", 1)[1].strip(), key_file
    finally:
        process.terminate()
        process.wait(60)


def test_predicting_through_an_engine_on_a_loopback_port(
    viewer, isbi, remote_engine, finish, shown_errors
) -> None:
    address, key_file = remote_engine
    image, _ = isbi
    train = TrainWidget(viewer)
    form = train.engine_form
    form.choice.value = "connect to host:port"
    form.address.value = address
    form.key_file.value = key_file
    assert form.apply(), shown_errors()
    engine = train.session.engine
    assert engine.where == address
    assert engine.pid is None  # no local engine process was started
    remote_pid = engine.call(Ping()).pid

    predict = PredictWidget(viewer)  # the same session, so the same engine
    predict.image_combo.select(image)
    predict.scope_combo.setCurrentText(CURRENT_SLICE)
    predict.predict_button.click()
    finish(predict)
    assert predict.job.state is RunState.DONE, shown_errors()
    assert f"{image.name} mask" in viewer.layers
    assert engine.call(Ping()).pid == remote_pid

    # The connection breaks (a dropped SSH tunnel): the next request connects again to
    # the same engine, which kept serving.
    engine._engine[0].close()
    assert engine.call(Ping()).pid == remote_pid
    assert engine.where == address

    form.address.value = "127.0.0.1:notaport"
    assert not form.apply()
    assert any("host:port" in text for text in shown_errors())
    form.choice.value = "this computer"
    assert form.apply()
    assert engine.where == "this computer"
