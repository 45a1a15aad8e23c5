#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything needed to train, export and test,
# then run the main job: inpaint the example photo with a checkpoint.
# Usage: bash scripts/quickstart.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"

mkdir -p out
# No trained default model ships yet: the main job runs the pipeline on an untrained
# 'tiny' checkpoint, so the hole is filled with untrained output.
.venv/bin/cicm-deploy init out/untrained-tiny.pt --preset tiny --force
.venv/bin/cicm-deploy inpaint examples/cat.jpg examples/cat_mask.png -o out/cat_inpainted.png \
    --checkpoint out/untrained-tiny.pt
echo "done: out/cat_inpainted.png"
