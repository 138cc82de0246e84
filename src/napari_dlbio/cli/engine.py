"""``dlbio engine``: serve models over a socket; ``dlbio predict --engine``: use one.

``dlbio engine --listen HOST:PORT --authkey-file FILE`` loads TensorFlow and the models
its clients ask for, and serves every client that proves it holds the key in FILE (created,
private, when it does not exist).  It listens on 127.0.0.1 unless told otherwise: reach it
from another computer through an SSH tunnel.  ``dlbio predict --engine HOST:PORT`` reads
the images here, sends them slice by slice, and writes the mask, probabilities and objects
here from the events the engine sends back, exactly as a local ``dlbio predict`` does; this
process then never loads TensorFlow or the model's network, only its settings.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlbio.core.errors import DlbioError, InputDataError

if TYPE_CHECKING:
    from napari_dlbio.core.events import CancelToken, Event
    from napari_dlbio.core.segmentation_config import SegmentationConfig
    from napari_dlbio.engine.client import EngineClient
    from napari_dlbio.engine.protocol import ModelInfo

LOCALHOST = "127.0.0.1"
#: The port of ``dlbio engine`` when ``--listen`` gives none.
DEFAULT_PORT = 8790
_KEY_HELP = "file with the engine's key (default ~/.dlbio/key; dlbio engine creates it)"


def add_engine_command(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``dlbio engine`` to the sub-commands and return its parser."""
    engine = commands.add_parser(
        "engine",
        help="serve models to dlbio predict --engine (and to napari) over a socket",
        description="Load models on this computer (a GPU node, say) and predict for clients "
        "that hold the key. Stop it with Ctrl+C.",
    )
    engine.add_argument(
        "--listen",
        default=f"{LOCALHOST}:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"address to listen on (default {LOCALHOST}:{DEFAULT_PORT}; ':PORT' or 'PORT' "
        f"means {LOCALHOST}; port 0 picks a free one)",
    )
    engine.add_argument("--authkey-file", default="~/.dlbio/key", metavar="FILE", help=_KEY_HELP)
    return engine


def add_engine_options(predict: argparse.ArgumentParser) -> None:
    """Add ``--engine`` and ``--authkey-file`` to ``dlbio predict``."""
    predict.add_argument(
        "--engine",
        metavar="HOST:PORT",
        help="segmentation: predict on the engine that 'dlbio engine' started there (the "
        "model is loaded there: --model names a model on that computer)",
    )
    predict.add_argument("--authkey-file", metavar="FILE", help=_KEY_HELP)


def parse_address(text: str, *, listening: bool) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` as (host, port); the host defaults to 127.0.0.1.

    Raises
    ------
    InputDataError
        For anything else, or a port out of range (0 only to listen: any free port).
    """
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or LOCALHOST
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    lowest = 0 if listening else 1
    if not lowest <= port <= 65535:
        raise InputDataError(
            f"{text!r} is no address: give HOST:PORT, :PORT or PORT, e.g. {LOCALHOST}:"
            f"{DEFAULT_PORT} (port {lowest}-65535)."
        )
    return host, port


def serve(args: argparse.Namespace) -> int:
    """``dlbio engine``: serve until Ctrl+C or SIGTERM; return the exit code."""
    from napari_dlbio.engine.auth import ensure_key, readable_by_others
    from napari_dlbio.engine.server import EngineServer

    host, port = parse_address(args.listen, listening=True)
    key_path = Path(args.authkey_file).expanduser()
    key, created = ensure_key(key_path)
    if created:
        sys.stderr.write(
            f"dlbio engine: wrote a new key to {key_path} (readable by you only); clients "
            "need a copy of this file.\n"
        )
    elif readable_by_others(key_path):
        sys.stderr.write(
            f"dlbio: warning: other users can read the key file {key_path}, and whoever holds "
            f"it can use this engine; make it private: chmod 600 {key_path}\n"
        )
    if host not in (LOCALHOST, "localhost"):
        sys.stderr.write(
            f"dlbio: warning: listening on {host}, not only on this computer: anyone who can "
            "reach the port may try keys. 127.0.0.1 and an SSH tunnel are safer.\n"
        )
    _log_to_stderr()
    try:
        server = EngineServer((host, port), key)
    except OSError as error:
        raise DlbioError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    bound_host, bound_port = server.address
    sys.stdout.write(f"dlbio engine listening on {bound_host}:{bound_port}\n")
    sys.stdout.flush()
    # SIGTERM (kill, Slurm's end of job) stops it as Ctrl+C does.
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread: signals stay as they are
        previous = None
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.stderr.write("dlbio engine: stopped.\n")
    return 0


def _log_to_stderr() -> None:
    """The engine's log lines (connections accepted and refused) on standard error."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("dlbio engine: %(message)s"))
    log = logging.getLogger("napari_dlbio.engine")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def refuse_options_beside_engine(args: argparse.Namespace) -> None:
    """``--engine`` predicts segmentations on the engine: options that ask for another
    place to predict, or for a classifier, are refused in one clear line."""
    from napari_dlbio.cli._cluster import uses_cluster

    if args.authkey_file and not args.engine:
        raise InputDataError("--authkey-file goes with --engine HOST:PORT.")
    if uses_cluster(args):
        raise InputDataError(
            "--engine predicts on the engine; it cannot be combined with --workers or "
            "--scheduler (give one of them)."
        )
    if args.cam:
        raise InputDataError(
            "--cam is for classifiers; dlbio predict --engine predicts with segmentation "
            "models: run it without --engine."
        )


def load_remote_model(args: argparse.Namespace) -> RemoteModel:
    """Load ``--model`` in the engine of ``--engine`` and read its settings from there.

    Raises
    ------
    EngineError
        When the engine cannot be reached or refuses the key.
    InputDataError
        When the model is not a segmentation model.
    """
    from napari_dlbio.core.segmentation_config import SegmentationConfig
    from napari_dlbio.engine.protocol import LoadModel

    engine = EngineAddress.from_args(args)
    with engine.connect() as client:
        info = client.call(LoadModel(args.model))
    if info.task != "segmentation":
        raise InputDataError(
            f"{args.model} is a {info.task} model; dlbio predict --engine predicts with "
            "segmentation models: run it without --engine."
        )
    config = SegmentationConfig.from_dict(info.config)
    if args.min_region_pixels is not None:
        config = config.replace(min_region_pixels=args.min_region_pixels)
    return RemoteModel(engine, info, config)


@dataclass(frozen=True)
class EngineAddress:
    """Where a remote engine listens, and the key it wants (``key_name`` says where the
    key came from, for messages)."""

    host: str
    port: int
    key: bytes
    key_name: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EngineAddress:
        """From ``--engine`` and ``--authkey-file``."""
        from napari_dlbio.engine.auth import DEFAULT_KEY_FILE, read_key

        host, port = parse_address(args.engine, listening=False)
        key_path = Path(args.authkey_file or DEFAULT_KEY_FILE).expanduser()
        return cls(host, port, read_key(key_path), f"the key in {key_path}")

    def connect(self) -> EngineClient:
        """A new connection to the engine."""
        from napari_dlbio.engine.client import connect

        return connect(self.host, self.port, self.key, key_name=self.key_name)


@dataclass(frozen=True)
class RemoteModel:
    """A segmentation model loaded in a remote engine: the engine, the model's
    description there, and its settings here (``config``, as ``ModelFolder.config``)."""

    engine: EngineAddress
    info: ModelInfo
    config: SegmentationConfig

    def iter_predict_slices(
        self, images: Any, *, cancel: CancelToken | None = None
    ) -> Generator[Event, None, None]:
        """Predict ``images`` on the engine: the events of
        :func:`~napari_dlbio.models.segmentation.iter_predict_slices`, from one job that
        reads the slices as they are sent (a few ahead), so any volume size works and the
        tiles are predicted in the same batches as here."""
        from napari_dlbio.core.normalisation import as_stack
        from napari_dlbio.engine.protocol import ArrayFeed, PredictSlices

        stack, axes = as_stack(images)
        shape = (*stack.shape, 1) if axes == "ZYX" else tuple(stack.shape)
        request = PredictSlices(self.info.id, ArrayFeed(shape, np.dtype(stack.dtype).str))
        with self.engine.connect() as client:
            yield from client.run(request, feed=_slices(stack), cancel=cancel)


def _slices(stack: Any) -> Generator[np.ndarray, None, None]:
    """The (Y, X, C) slices of a ZYX or ZYXC stack, read one at a time."""
    for z in range(stack.shape[0]):
        plane = np.asarray(stack[z])
        yield plane[..., np.newaxis] if plane.ndim == 2 else plane
