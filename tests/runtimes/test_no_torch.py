"""The runtime side never imports torch: a Jetson or a vehicle box installs only that side."""

from __future__ import annotations

import subprocess
import sys
import textwrap

RUNTIME_MODULES = ["cicm_deploy", "cicm_deploy.runtimes", "cicm_deploy.images", "cicm_deploy.config",
                   "cicm_deploy.environment", "cicm_deploy.cli"]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_runtime_imports_do_not_load_torch():
    result = run_python(f"""
        import importlib, sys
        for name in {RUNTIME_MODULES!r}:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print(loaded)
        assert not loaded, loaded
    """)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_cli_works_where_torch_cannot_be_imported():
    """With torch blocked (as if not installed): --help, --version and doctor work; inpaint says what to install."""
    result = run_python(f"""
        import importlib.abc, importlib.machinery, sys

        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError("No module named 'torch'", name=name)
                return None

        sys.meta_path.insert(0, NoTorch())
        import importlib.util
        importlib.util.find_spec = (lambda original: lambda name, *a, **k:
                                    None if name.split(".")[0] == "torch" else original(name, *a, **k))(importlib.util.find_spec)
        from click.testing import CliRunner
        from cicm_deploy.cli import cli
        runner = CliRunner()
        for args in (["--help"], ["--version"], ["doctor"], ["doctor", "--json"]):
            res = runner.invoke(cli, args)
            assert res.exit_code == 0, (args, res.output, res.exception)
        import json
        assert json.loads(runner.invoke(cli, ["doctor", "--json"]).output)["torch"]["installed"] is False
        res = runner.invoke(cli, ["inpaint", "a.png", "b.png", "-o", "c.png", "--checkpoint", "d.pt"])
        assert res.exit_code == 2, res.output
        assert "pip install 'cicm-deploy[train]'" in res.output, res.output
        assert "torch" not in sys.modules
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr
