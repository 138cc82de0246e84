#!/usr/bin/env bash
# Run the test suite under a virtual X display (napari needs one for its OpenGL canvas).
# Extra arguments go to pytest; the exit status is pytest's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-env.sh

export QT_QPA_PLATFORM=xcb
if command -v xvfb-run >/dev/null 2>&1; then
  exec xvfb-run -a .venv/bin/pytest "$@"
fi
if [[ -n "${DISPLAY:-}" ]]; then
  exec .venv/bin/pytest "$@"
fi
echo "run-tests: xvfb-run is missing and there is no DISPLAY; install xvfb (see scripts/setup-env.sh)." >&2
exit 1
