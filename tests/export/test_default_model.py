"""The shipped default models: they load, fit the size budget, and export + pass parity in CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from cicm_deploy.checkpoint import load_model
from cicm_deploy.cli import cli, default_model_path

MODELS = default_model_path().parent


def test_default_models_ship_and_load():
    paths = [MODELS / "default.pt", MODELS / "default-unet.pt"]
    assert sum(p.stat().st_size for p in paths) <= 20 * 2**20
    cicm, data = load_model(paths[0])
    unet, unet_data = load_model(paths[1])
    assert cicm.config.uses_cicm and not unet.config.uses_cicm
    assert data["step"] == unet_data["step"] > 0
    assert data["optimizer"] is None and "trainer" not in data  # release checkpoints: weights only
    sidecar = json.loads((MODELS / "default.json").read_text())
    assert sidecar["step"] == data["step"] and sidecar["log"]["val_psnr"]


@pytest.mark.parametrize("precision,routing", [("fp32", "onnx"), ("fp16", "onnx"), ("fp32", "plugin"),
                                               ("fp16", "plugin")])
def test_export_and_parity_of_the_default_model(tmp_path, precision, routing):
    out = tmp_path / f"{precision}_{routing}"
    args = ["export", str(MODELS / "default.pt"), "-o", str(out), "--routing", routing]
    if precision == "fp16":
        args.append("--fp16")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output
    parity = CliRunner().invoke(cli, ["parity", str(out), "--json", str(tmp_path / "p.json")])
    assert parity.exit_code == 0, parity.output
    report = json.loads((tmp_path / "p.json").read_text())
    image, route = report["outputs"]
    if precision == "fp32":
        assert image["max_abs"] <= 1e-4 and route["agreement"] == 1.0
    else:
        assert image["psnr_db"] >= 45 and route["agreement"] >= 0.999


def test_demo_runs_offline_on_the_default_model(tmp_path):
    out = tmp_path / "demo.png"
    result = CliRunner().invoke(cli, ["demo", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "default.pt" in result.output
    assert Image.open(out).size == (3 * 512, 384)


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt_rtx") is None,
                    reason="TensorRT for RTX is not installed (pip install 'cicm-deploy[rtx]')")
@pytest.mark.parametrize("precision,routing", [("fp32", "onnx"), ("fp16", "onnx"), ("fp32", "plugin"),
                                               ("fp16", "plugin")])
def test_default_bundle_builds_rtx_engines_for_sm86(tmp_path, precision, routing):
    """The shipped default model, exported and built ahead of time for SM86 (no GPU needed)."""
    import subprocess
    import sys

    from cicm_deploy.export.bundle import export_bundle

    bundle = export_bundle(MODELS / "default.pt", tmp_path / "b", fp16=precision == "fp16", routing=routing,
                           check=False).path
    engine = tmp_path / "default.engine"
    script = Path(sys.executable).parent / "cicm-deploy"
    done = subprocess.run([str(script), "build", str(bundle), "-o", str(engine), "--rtx", "--sm", "86",
                           "--max-shape", "2x512x512"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    layers = json.loads(engine.with_name("default.engine.json").read_text())["layers"]
    assert ("PLUGIN_V3" in layers) == (routing == "plugin")
