"""Run every benchmark of the project, one after the other, and collect their figures.

Each benchmark runs alone in its own process (timings on a shared 2-core machine are only
worth comparing when nothing else runs) and prints one JSON object as its last line; this
script writes them all to one JSON file and prints a table.  The GUI benchmark needs a
display: it runs under ``xvfb-run`` when there is none.

Usage: python benchmarks/run_all.py [--out benchmarks/results.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, arguments, arguments with --quick)
BENCHMARKS = (
    ("speed.py", [], ["--quick"]),
    ("segmentation_quality.py", [], ["--budget", "30", "--targets", "membrane"]),
    ("classifier_quality.py", [], ["--budget", "30"]),
    ("interactive_loop.py", [], ["--rounds", "2"]),
    ("builtin_models.py", [], ["--rounds", "1"]),
    ("instances.py", [], []),
    ("leaf_transfer.py", [], ["--epochs", "10", "--draws", "1"]),
    ("gui_responsiveness.py", [], ["--smoke"]),
    ("soak.py", [], ["--cycles", "3"]),
    ("large_volume.py", [], ["--quick"]),
    ("multi_worker_training.py", [], ["--steps", "10"]),
    ("engine_round_trip.py", [], []),
)


def run(script: str, arguments: list[str]) -> tuple[dict | None, float, str]:
    """Run one benchmark; return its JSON figures (None on failure), seconds and a note."""
    command = [sys.executable, str(HERE / script), *arguments]
    if script == "gui_responsiveness.py" and not os.environ.get("DISPLAY"):
        if shutil.which("xvfb-run") is None:
            return None, 0.0, "skipped: no display and no xvfb-run"
        command = ["xvfb-run", "-a", *command]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    sys.stdout.write(completed.stdout)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-4000:])
        return None, seconds, f"failed with exit code {completed.returncode}"
    lines = completed.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]), seconds, "ok"
    except (IndexError, json.JSONDecodeError):
        return None, seconds, "no JSON on the last line"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results.json", help="JSON file")
    parser.add_argument("--quick", action="store_true", help="short runs to check the scripts")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    for script, full, quick in BENCHMARKS:
        if not (HERE / script).is_file():
            continue
        print(f"=== {script}", flush=True)
        figures, seconds, note = run(script, quick if args.quick else full)
        results[script] = {"status": note, "seconds": round(seconds, 1), "figures": figures}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(f"{'benchmark':<28}{'status':<34}{'seconds':>9}")
    for script, result in results.items():
        print(f"{script:<28}{result['status']:<34}{result['seconds']:>9.1f}")
    print(f"figures written to {args.out}")
    print(json.dumps({name: result["status"] for name, result in results.items()}))


if __name__ == "__main__":
    main()
