"""pyproject.toml ships every file the package reads at run time, and lists every folder of them.

setuptools treats a folder of files inside a package as a package of its own: one missing from
``packages`` is either left out of the wheel or shipped with a "Package would be ignored" warning
printed by every install (the quickstart's among them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_packaged_folder_is_listed_and_its_files_ship():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {name: ROOT / path for name, path in setuptools["package-dir"].items()}
    listed, data = set(setuptools["packages"]), setuptools["package-data"]

    def source(package: str) -> Path:
        base = max((name for name in dirs if package == name or package.startswith(name + ".")), key=len)
        return dirs[base].joinpath(*package[len(base):].split(".")[1:])

    found = set()
    for top in ("cicm_deploy", "cicm_deploy.train", "cicm_deploy.export", "cicm_deploy.runtimes"):
        for folder in source(top).rglob("*"):
            if not folder.is_dir() or folder.name == "__pycache__" or not any(f.is_file() for f in folder.iterdir()):
                continue
            relative = folder.relative_to(source(top)).parts
            if relative and not any(top + "." + relative[0] == other for other in dirs):
                found.add(".".join((top, *relative)))
    assert found <= listed, f"folders of files not in [tool.setuptools] packages: {sorted(found - listed)}"
    for package in sorted(found):
        if (source(package) / "__init__.py").exists():
            continue
        files = {f.name for f in source(package).iterdir() if f.is_file()}
        shipped = {f.name for pattern in data.get(package, []) for f in source(package).glob(pattern)}
        assert files <= shipped, f"{package}: not matched by its package-data: {sorted(files - shipped)}"
