#!/usr/bin/env bash
# Idempotent set-up for tests and development: the system libraries Qt and napari need under
# Xvfb (installed only when missing and when running as root), a .venv, and the package in
# editable mode with its gui and testing extras.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

apt_packages=(
  xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
  libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1
)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for package in "${apt_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$package")
    fi
  done
fi

if ((${#missing[@]})); then
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  else
    echo "setup-env: missing system packages (install them as root): ${missing[*]}" >&2
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  python="$(command -v python3.11 || command -v python3)"
  "$python" -m venv .venv
fi

.venv/bin/pip install -e ".[gui,testing]"
