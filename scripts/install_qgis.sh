#!/usr/bin/env bash
# Install QGIS (Debian 12: QGIS 3.22) and pytest for Debian's system Python, used by tests/qgis.
# Idempotent: does nothing when everything is already installed. Needs root (or sudo).
set -euo pipefail

PACKAGES=(qgis python3-qgis python3-pytest)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "QGIS already installed: $(dpkg-query -W -f='${Version}' qgis)"
    exit 0
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# --no-install-recommends keeps it to about 140 MB (no GRASS, no desktop extras).
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
echo "QGIS installed: $(dpkg-query -W -f='${Version}' qgis)"
