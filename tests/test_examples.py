"""The examples run as a user runs them, each well under a minute on a CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script,outputs", [
    ("vehicle_camera.py", ["vehicle_camera.mp4"]),
    ("privacy_boxes.py", ["privacy.avi", "privacy_boxes.jsonl"]),
])
def test_example_runs(tmp_path, script, outputs):
    done = subprocess.run([sys.executable, str(EXAMPLES / script), str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    for name in outputs:
        assert (tmp_path / name).stat().st_size > 0
    from cicm_deploy.video import read_frames

    video = next(tmp_path / n for n in outputs if n.endswith((".mp4", ".avi")))
    assert sum(1 for _ in read_frames(video)) == 24


def test_readme_embedding_example():
    done = subprocess.run([sys.executable, str(EXAMPLES / "embed.py")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["torch", "(120,", "160,", "3)", "True"]
    readme = (EXAMPLES.parent / "README.md").read_text()
    body = [line for line in (EXAMPLES / "embed.py").read_text().splitlines()[1:]]
    assert "\n".join(body) in readme  # the README shows exactly the code that is tested
