"""Who may talk to an engine: key files, and the handshake every connection starts with.

Both ends prove they hold the same key with ``multiprocessing``'s HMAC challenge, in both
directions, before any message is read.  The handshake runs under a deadline, so a peer
that connects and says nothing (or speaks another protocol) is dropped instead of holding
a thread forever.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from multiprocessing.connection import (
    AuthenticationError,
    Connection,
    answer_challenge,
    deliver_challenge,
)
from pathlib import Path

from napari_dlbio.core.errors import DlbioError
from napari_dlbio.engine.transport import shutdown

#: Seconds a peer has to complete the handshake.
HANDSHAKE_TIMEOUT_S = 10.0
#: Where ``dlbio engine`` and ``dlbio predict --engine`` look for the key by default.
DEFAULT_KEY_FILE = Path("~/.dlbio/key")


class HandshakeError(Exception):
    """The peer did not complete the handshake: it is no engine (or client), or it was
    too slow.  A wrong key raises ``AuthenticationError`` instead."""


def handshake(connection: Connection, key: bytes, *, server: bool, timeout: float) -> None:
    """Authenticate both ends of a fresh ``connection`` with ``key``.

    Raises
    ------
    AuthenticationError
        When the peer holds another key.
    HandshakeError
        When the peer breaks off, speaks another protocol or takes longer than ``timeout``.
    """
    steps = (
        (deliver_challenge, answer_challenge) if server else (answer_challenge, deliver_challenge)
    )
    with _deadline(connection, timeout) as expired:
        try:
            for step in steps:
                step(connection, key)
        except AuthenticationError:
            raise
        # answer_challenge asserts the challenge's prefix; a frame over 256 bytes is an
        # OSError ("bad message length").
        except (OSError, EOFError, AssertionError) as error:
            if expired.is_set():
                raise HandshakeError(f"no handshake within {timeout:g} s") from None
            raise HandshakeError(f"no valid handshake ({type(error).__name__})") from None


@contextlib.contextmanager
def _deadline(connection: Connection, timeout: float) -> Iterator[threading.Event]:
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        shutdown(connection)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()


def read_key(path: str | Path) -> bytes:
    """The key in the key file ``path`` (surrounding white space ignored).

    Raises
    ------
    DlbioError
        When the file is missing, unreadable or empty.
    """
    path = Path(path).expanduser()
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        raise DlbioError(
            f"the key file {path} does not exist; copy the key file the engine was started "
            "with (dlbio engine creates it)"
        ) from None
    except OSError as error:
        raise DlbioError(f"cannot read the key file {path}: {error.strerror}") from None
    if not key:
        raise DlbioError(f"the key file {path} is empty; copy the engine's key file")
    return key


def ensure_key(path: str | Path) -> tuple[bytes, bool]:
    """The key in ``path``, creating the file with a new random key (mode 0600, its
    folder 0700) when it does not exist; the flag says whether it was created."""
    path = Path(path).expanduser()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_key(path), False
        except OSError as error:
            raise DlbioError(f"cannot create the key file {path}: {error.strerror}") from None
        with open(fd, "w", encoding="ascii") as stream:
            stream.write(key + "\n")
        return key.encode("ascii"), True
    return read_key(path), False


def readable_by_others(path: str | Path) -> bool:
    """Whether users other than the owner may read the key file (group or other bits)."""
    mode = Path(path).expanduser().stat().st_mode
    return os.name == "posix" and bool(mode & (stat.S_IRGRP | stat.S_IROTH))
