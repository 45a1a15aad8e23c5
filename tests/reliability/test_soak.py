"""Soak: thousands of inferences on the onnxruntime CPU backend; resident memory must not grow.

Marked `soak` and left out of the default run (see pyproject's addopts); run it with
`python -m pytest -m soak`.
"""

from __future__ import annotations

import numpy as np
import pytest

from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.soak
def test_resident_memory_stays_bounded_over_thousands_of_calls(bundles):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 56), (33, 47), (64, 64))]
    holes = [rng.random(f.shape[:2]) > 0.7 for f in frames]
    with OnnxRuntimeBackend(bundles("fp32", "onnx").path) as runtime:
        for i in range(200):  # warm-up: allocator pools, per-shape plans
            runtime.infer(frames[i % 3], holes[i % 3])
        start = rss_mib()
        for i in range(3000):
            runtime.infer(frames[i % 3], holes[i % 3])
        growth = rss_mib() - start
    assert growth < 20, f"resident memory grew by {growth:.1f} MiB over 3000 calls"
