#!/usr/bin/env bash
# The main job on the built-in sample data: napari with the plugin docked when a screen is
# available, otherwise (or with --headless) the headless train -> predict -> export job.
# Extra arguments go to `python -m napari_dlbio.demo` (e.g. --headless, --time-budget 60).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-env.sh
exec .venv/bin/python -m napari_dlbio.demo "$@"
