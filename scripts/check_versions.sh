#!/usr/bin/env bash
# The tests again under dependency versions the [dev] environment of quickstart.sh does not have:
#   newest  without the [serve] extra, whose PyTriton holds numpy below 2: numpy 2 and the newest
#           release of everything else, which is what `pip install 'cicm-deploy[cpu,export]'` gives;
#           the whole suite (the Triton tests skip: no tritonclient).
#   lowest  the lowest versions pyproject.toml allows (scripts/lowest-constraints.txt): the core,
#           export, runtime, reliability and CLI tests.
# Each gets its own virtual environment (.venv-newest, .venv-lowest), made again on every run.
# The lowest set needs Python 3.11 or older (numpy 1.24 has no wheels for later ones): PYTHON=python3.11.
# Usage: bash scripts/check_versions.sh [newest] [lowest]     (both when none is named)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
checks=("$@")
[ ${#checks[@]} -eq 0 ] && checks=(newest lowest)

for check in "${checks[@]}"; do
    venv=".venv-$check"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    case "$check" in
        newest)
            "$venv/bin/python" -m pip install --quiet -e ".[cpu,export,eval,plot,video]" "pytest>=8" "hypothesis>=6.80"
            tests=(tests -m "not soak")
            ;;
        lowest)
            "$venv/bin/python" -m pip install --quiet -c scripts/lowest-constraints.txt -e ".[cpu,export]" \
                "pytest>=8" "hypothesis>=6.80"
            tests=(tests/core tests/export tests/runtimes tests/reliability tests/test_inpainter.py tests/test_cli.py
                   -m "not soak")
            ;;
        *)
            echo "unknown check '$check' (newest or lowest)" >&2
            exit 2
            ;;
    esac
    echo "== $check: $("$venv/bin/python" -c 'from importlib.metadata import version as v
print(", ".join(f"{p} {v(p)}" for p in ("numpy", "pillow", "onnx", "onnxruntime", "polygraphy", "torch")))')"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
done
