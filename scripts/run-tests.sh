#!/usr/bin/env bash
# Run the test suite under a virtual X display (napari needs one for its OpenGL canvas).
# Extra arguments go to pytest. The tests that open a napari viewer (tests/widgets) run in
# a second pytest process that, like a user's napari, never imports TensorFlow: the engine
# process the widgets start does (see tests/conftest.py). Test modules outside
# tests/widgets may import TensorFlow when collected; those inside never do.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-env.sh

export QT_QPA_PLATFORM=xcb
if command -v xvfb-run >/dev/null 2>&1; then
  run=(xvfb-run -a .venv/bin/pytest)
elif [[ -n "${DISPLAY:-}" ]]; then
  run=(.venv/bin/pytest)
else
  echo "run-tests: xvfb-run is missing and there is no DISPLAY; install xvfb (see scripts/setup-env.sh)." >&2
  exit 1
fi

status=0
"${run[@]}" --ignore=tests/widgets "$@" || status=$?
gui_status=0
"${run[@]}" tests/widgets "$@" || gui_status=$?

# pytest exits 5 when a selection holds no test; that is fine for one of the two halves.
if [[ $status -eq 5 && $gui_status -eq 5 ]]; then exit 5; fi
[[ $status -eq 5 ]] && status=0
[[ $gui_status -eq 5 ]] && gui_status=0
if [[ $status -ne 0 ]]; then exit "$status"; fi
exit "$gui_status"
