#!/usr/bin/env bash
# Run the QGIS plugin tests with Debian's system Python (QGIS's), never the geodiff venv.
# Installs nothing: run scripts/install_qgis.sh first. Extra arguments go to pytest (e.g. -k cancel).
# GEODIFF_EXECUTABLE (default .venv/bin/geodiff or `which geodiff`) and GEODIFF_TEST_MODEL select the real CLI
# and the tiny model for the end-to-end tests, which skip when they are missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

export QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"  # keeps Qt quiet on headless machines
unset PYTHONPATH PYTHONHOME  # a venv's paths must not shadow QGIS's Python packages
# QGIS's embedded Python finds its home through `python3` on PATH: with a venv active (CI activates one) it
# would load the venv's interpreter and fail to import qgis, so Debian's python3 must come first.
unset VIRTUAL_ENV
export PATH="/usr/bin:/bin:$PATH"
# -m qgis overrides the project's default '-m "not qgis"'; -p no:cacheprovider keeps root-owned caches out.
exec /usr/bin/python3 -m pytest tests/qgis -m qgis -p no:cacheprovider "$@"
