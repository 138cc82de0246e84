"""Events and the cancel token: the contract between long jobs and their drivers."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from napari_dlbio.core.events import CancelToken, TileDone, run_to_end


def _job(n: int, cancel: CancelToken):
    done = 0
    for i in range(n):
        if cancel.cancelled:
            break
        done += 1
        yield TileDone(i + 1, n)
    return done


def test_run_to_end_returns_the_result_and_passes_every_event():
    seen = []
    assert run_to_end(_job(4, CancelToken()), seen.append) == 4
    assert seen == [TileDone(i, 4) for i in range(1, 5)]


def test_cancel_from_another_thread_stops_the_job_early():
    cancel = CancelToken()
    seen = []

    def on_event(event):
        seen.append(event)
        if event.index == 2:
            threading.Thread(target=cancel.cancel).start()
            threading.Event().wait(0.05)

    assert run_to_end(_job(100, cancel), on_event) == 2
    assert cancel.cancelled


def test_events_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TileDone(1, 2).index = 3
