#!/usr/bin/env bash
# Download the pure-Python wheels the GPU image lacks into .whl/ (git-ignored), for Python 3.12.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    diffusers==0.42.1 importlib_metadata
ls -la .whl
