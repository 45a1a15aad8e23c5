"""CICM_STRICT_SKIPS=1 (CI) fails skips that are not about absent GPU/TensorRT hardware, including a
module-level importorskip that skips a whole file at collection."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def run_pytest(folder: Path, strict: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "CICM_STRICT_SKIPS": "1" if strict else "0"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(folder)],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=120)


def make_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), folder / "conftest.py")
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_strict_mode_fails_software_skips_and_keeps_hardware_ones(tmp_path):
    folder = make_folder(tmp_path / "tests", {"test_skips.py": (
        "import pytest\n"
        "def test_software():\n    pytest.skip('cmake is not installed')\n"
        "@pytest.mark.gpu\ndef test_hardware():\n    pass\n")})
    lenient = run_pytest(folder, strict=False)
    assert lenient.returncode == 0 and "2 skipped" in lenient.stdout, lenient.stdout
    strict = run_pytest(folder, strict=True)
    assert strict.returncode == 1 and "1 failed, 1 skipped" in strict.stdout, strict.stdout
    assert "skipped for a reason other than absent GPU/TensorRT hardware (CICM_STRICT_SKIPS=1): cmake" in strict.stdout


def test_strict_mode_fails_a_module_level_importorskip(tmp_path):
    folder = make_folder(tmp_path / "tests", {"test_module_skip.py": (
        "import pytest\npytest.importorskip('no_such_module_here', reason='no_such_module_here is not installed')\n"
        "def test_a():\n    pass\n")})
    lenient = run_pytest(folder, strict=False)
    assert lenient.returncode == 5 and "1 skipped" in lenient.stdout, lenient.stdout  # 5: no test left to run
    strict = run_pytest(folder, strict=True)
    assert strict.returncode != 0 and "no_such_module_here is not installed" in strict.stdout, strict.stdout
