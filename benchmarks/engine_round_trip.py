"""Round trip through the engine process against prediction in this process (issue 20).

One 512 x 512 ISBI 2012 slice is predicted with ``builtin:em-membranes``, both ways with
the model already loaded and warmed up:

- **in-process**: :func:`~napari_dlbio.models.segmentation.iter_predict_slices` run to its
  end here;
- **engine**: the same request through a :class:`~napari_dlbio.engine.local.LocalEngine`
  (a child process): the slice goes in, the events (the probabilities through shared
  memory) come back.

The two are timed in alternation, ``--repeats`` times each (each timed run after an
untimed one of the same way), and their medians compared.
Prints a small table; the last line is one JSON object with ``in_process_ms``,
``engine_ms`` and ``engine_overhead_ratio`` (engine / in-process - 1; target <= 0.10).

Usage: python benchmarks/engine_round_trip.py [--repeats 40] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
MODEL = "builtin:em-membranes"


def seconds(call: Any) -> float:
    """Wall seconds of ``call()``."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed runs of each way")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    args = parser.parse_args()

    from napari_dlbio.core.events import SlicePredicted, run_to_end
    from napari_dlbio.engine.local import LocalEngine
    from napari_dlbio.engine.protocol import LoadModel, PredictSlices
    from napari_dlbio.models.segmentation import iter_predict_slices
    from napari_dlbio.models.store import load_model_folder

    volume = args.data / "isbi2012" / "train-volume.tif"
    if not volume.is_file():
        raise SystemExit(f"{volume} is missing; point --data at the shared data folder.")
    image = tifffile.imread(volume)[:1]  # (1, 512, 512) uint8
    model = load_model_folder(MODEL)
    engine = LocalEngine()
    try:
        started = time.perf_counter()
        model_id = engine.call(LoadModel(MODEL)).id
        engine_load_s = time.perf_counter() - started

        def here() -> list[Any]:
            events: list[Any] = []
            run_to_end(iter_predict_slices(model, image), events.append)
            return events

        def there() -> list[Any]:
            events: list[Any] = []
            run_to_end(engine.run(PredictSlices(model_id, image)), events.append)
            return events

        for _ in range(3):  # warm up: graph tracing, thread pools, first shared-memory files
            mine, theirs = here(), there()
        same = all(
            np.array_equal(a.probabilities, b.probabilities)
            for a, b in zip(mine, theirs, strict=True)
            if isinstance(a, SlicePredicted)
        )
        in_process, through_engine = [], []
        for _ in range(args.repeats):
            # Each timed run follows an untimed one of its own kind: TensorFlow's threads
            # in the other process may still be spinning after its run (both processes
            # load TensorFlow here; napari never does).
            here()
            in_process.append(seconds(here))
            there()
            through_engine.append(seconds(there))
    finally:
        engine.close()

    in_process_ms = statistics.median(in_process) * 1000
    engine_ms = statistics.median(through_engine) * 1000
    figures = {
        "in_process_ms": round(in_process_ms, 1),
        "engine_ms": round(engine_ms, 1),
        "engine_overhead_ratio": round(engine_ms / in_process_ms - 1, 4),
        "engine_overhead_ms": round(engine_ms - in_process_ms, 1),
        "repeats": args.repeats,
        "engine_start_and_load_s": round(engine_load_s, 2),
        "identical_probabilities": same,
    }
    print(f"{'512 x 512 slice, ' + MODEL:<40} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for name, times in (("in-process", in_process), ("through the engine", through_engine)):
        median, low, high = (1000 * t for t in (statistics.median(times), min(times), max(times)))
        print(f"{name:<40} {median:>10.1f} {low:>8.1f} {high:>8.1f}")
    print(
        f"overhead {figures['engine_overhead_ms']} ms ({figures['engine_overhead_ratio']:+.1%}; "
        f"target <= +10%); probabilities identical: {same}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
