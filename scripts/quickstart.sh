#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything needed to train, export, evaluate and
# test, then run the main job: the default model inpaints the shipped demo photo (offline).
# Usage: bash scripts/quickstart.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"

.venv/bin/cicm-deploy demo -o out/demo.png
