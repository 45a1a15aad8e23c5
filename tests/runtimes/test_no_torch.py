"""The runtime side never imports torch: a Jetson or a vehicle box installs only that side."""

from __future__ import annotations

import subprocess
import sys
import textwrap

RUNTIME_MODULES = ["cicm_deploy", "cicm_deploy.runtimes", "cicm_deploy.images", "cicm_deploy.config",
                   "cicm_deploy.environment", "cicm_deploy.cli", "cicm_deploy.custom_op",
                   "cicm_deploy.runtimes.base", "cicm_deploy.runtimes.bundle", "cicm_deploy.runtimes.onnxruntime",
                   "cicm_deploy.runtimes.parity", "cicm_deploy.runtimes.reference_op"]

# Makes torch impossible to import, as on a machine where it is not installed.
BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, importlib.util, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError("No module named 'torch'", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] == "torch" else _find_spec(name, *a, **k)
""")


def run_python(code: str, block_torch: bool = False) -> subprocess.CompletedProcess:
    script = (BLOCK_TORCH if block_torch else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_runtime_imports_do_not_load_torch():
    result = run_python(f"""
        import importlib, sys
        for name in {RUNTIME_MODULES!r}:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, loaded
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr


def test_cli_basics_work_where_torch_cannot_be_imported():
    """--help, --version and doctor work; the PyTorch commands say what to install."""
    result = run_python("""
        import json
        from click.testing import CliRunner
        from cicm_deploy.cli import cli
        runner = CliRunner()
        for args in (["--help"], ["--version"], ["doctor"], ["doctor", "--json"]):
            res = runner.invoke(cli, args)
            assert res.exit_code == 0, (args, res.output, res.exception)
        assert json.loads(runner.invoke(cli, ["doctor", "--json"]).output)["torch"]["installed"] is False
        for args in (["inpaint", "a.png", "b.png", "-o", "c.png", "--checkpoint", "d.pt"], ["export", "d.pt"]):
            res = runner.invoke(cli, args)
            assert res.exit_code == 2, res.output
            assert "pip install 'cicm-deploy[train]'" in res.output, res.output
        assert "torch" not in sys.modules
        print("ok")
    """, block_torch=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr


def test_runtime_commands_work_where_torch_cannot_be_imported(bundles, tmp_path, photo, hole):
    """run, parity and inpaint --bundle on FP32/FP16 and onnx/plugin bundles, torch blocked."""
    from cicm_deploy.images import save_image, save_mask
    from cicm_deploy.runtimes.bundle import open_bundle

    onnx_bundle, plugin_bundle = bundles("fp32", "onnx").path, bundles("fp16", "plugin").path
    golden = open_bundle(onnx_bundle).goldens()[0]
    import numpy as np

    np.savez(tmp_path / "in.npz", image=golden.image, mask=golden.mask)
    image, mask = save_image(tmp_path / "p.png", photo), save_mask(tmp_path / "m.png", hole)
    result = run_python(f"""
        from click.testing import CliRunner
        from cicm_deploy.cli import cli
        runner = CliRunner()
        commands = [
            ["run", {str(onnx_bundle)!r}, "--input", {str(tmp_path / "in.npz")!r}],
            ["parity", {str(onnx_bundle)!r}],
            ["parity", {str(plugin_bundle)!r}],
            ["inpaint", {str(image)!r}, {str(mask)!r}, "-o", {str(tmp_path / "o.png")!r}, "--bundle", {str(plugin_bundle)!r}],
        ]
        for args in commands:
            res = runner.invoke(cli, args)
            assert res.exit_code == 0, (args, res.output, repr(res.exception))
        assert "torch" not in sys.modules
        print("ok")
    """, block_torch=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr
