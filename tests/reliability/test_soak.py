"""Repeated train -> cancel -> predict cycles leak no threads and no steady memory.

A short version of ``benchmarks/soak.py`` (whose cycle code it runs): a tiny U-Net on a
crop of the ISBI sample, cancelled after two batches, five times in one process.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"
CYCLES = 5
# Memory a cycle may keep once warm (measured: about 3 MiB).
MAX_GROWTH_PER_CYCLE_MIB = 10.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("dlbio_soak_benchmark", SOAK)
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs: its dataclass looks its own module up by name.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def cycles(soak, tiny_segmentation_config):
    """(Python threads before, records of the cycles)."""
    from napari_dlbio._sample_data import make_isbi_sample
    from napari_dlbio.models._tf import load_tensorflow

    load_tensorflow()
    (image, _, _), (annotation, _, _) = make_isbi_sample()
    images, annotation = image[:2, :128, :128], annotation[:2, :128, :128]
    config = tiny_segmentation_config.replace(epochs=100, steps_per_epoch=20, tile_size=64)
    threads = soak.python_threads()
    return threads, soak.run_cycles(CYCLES, images, annotation, config, batches=2, trim=True)


def test_every_cycle_is_cancelled_within_its_epoch_and_predicts(cycles):
    _, records = cycles
    assert [record.state for record in records] == ["cancelled"] * CYCLES
    # Cancelling takes effect after the batch that is running: well within the epoch.
    assert all(2 <= record.batches < 20 for record in records)


def test_cycles_leave_no_threads_behind(soak, cycles):
    threads, records = cycles
    assert [record.threads for record in records] == [threads] * CYCLES
    assert soak.summary(records, records[0].rss_mib, threads)["threads_end"] == threads


def test_memory_levels_off_after_the_first_cycles(cycles):
    _, records = cycles
    rss = [record.rss_mib for record in records]
    assert rss[-1] - rss[1] <= MAX_GROWTH_PER_CYCLE_MIB * (CYCLES - 2), rss
