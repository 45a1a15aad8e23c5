"""`cicm-deploy build` with TensorRT for RTX: ahead-of-time engines for SM86 on a machine without a GPU.

Each build runs in a subprocess: a TensorRT abort (it can abort the process on a plugin node it
cannot resolve) then fails one test instead of ending the run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="TensorRT for RTX is not installed (pip install 'cicm-deploy[rtx]')")


def cicm_deploy(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "cicm-deploy"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cicm_deploy.cli"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=600)


@needs_rtx
@pytest.mark.parametrize("precision,routing", [("fp32", "onnx"), ("fp16", "onnx"), ("fp32", "plugin"),
                                               ("fp16", "plugin")])
def test_build_rtx_engine_for_sm86(bundles, tmp_path, precision, routing):
    engine = tmp_path / "model.engine"
    done = cicm_deploy("build", bundles(precision, routing).path, "-o", engine, "--rtx", "--sm", "86",
                       "--max-shape", "2x512x512")
    assert done.returncode == 0, done.stdout + done.stderr
    assert engine.stat().st_size > 0
    sidecar = json.loads(engine.with_name("model.engine.json").read_text())
    assert sidecar["tensorrt_module"] == "tensorrt_rtx" and sidecar["target_compute_capability"] == "SM86"
    assert sidecar["precision"] == precision and sidecar["routing"] == routing
    assert sidecar["profile"] == {"min": [1, 64, 64], "opt": [1, 256, 256], "max": [2, 512, 512]}
    assert ("PLUGIN_V3" in sidecar["layers"]) == (routing == "plugin")
    if routing == "plugin":
        assert sidecar["layers"]["PLUGIN_V3"] == 1 and sidecar["plugin"]["kind"] == "python"


@needs_rtx
def test_build_user_errors(bundles, tmp_path):
    bundle = bundles("fp32", "onnx").path
    done = cicm_deploy("build", bundle, "-o", tmp_path / "e", "--rtx", "--sm", "12")
    assert done.returncode == 2 and "is not a compute capability" in done.stderr
    done = cicm_deploy("build", bundle, "-o", tmp_path / "e", "--rtx", "--min-shape", "4x64x64", "--opt-shape",
                       "1x64x64")
    assert done.returncode == 2 and "min <= opt <= max" in done.stderr
    done = cicm_deploy("build", bundles("fp32", "plugin").path, "-o", tmp_path / "e", "--rtx", "--plugin",
                       tmp_path / "missing.so")
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_build_checks_the_users_options_before_looking_for_tensorrt(bundles, tmp_path):
    bundle = bundles("fp32", "onnx").path
    done = cicm_deploy("build", bundle, "-o", tmp_path / "e", "--min-shape", "4x64x64", "--opt-shape", "1x64x64")
    assert done.returncode == 2 and "min <= opt <= max" in done.stderr
    done = cicm_deploy("build", bundle, "-o", tmp_path / "e", "--sm", "86")
    assert done.returncode == 2 and "needs --rtx" in done.stderr
    assert not (tmp_path / "e").exists()


def test_build_without_tensorrt_says_what_to_install(bundles, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    done = cicm_deploy("build", bundles("fp32", "onnx").path, "-o", tmp_path / "e")
    assert done.returncode == 2
    assert "TensorRT's Python module is not installed" in done.stderr and "Traceback" not in done.stderr
