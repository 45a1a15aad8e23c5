"""Shared test helpers: hardware detection for the gpu/trt markers, small models and images."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest


def cuda_available() -> tuple[bool, str]:
    """(present, reason) for the `gpu` marker; the one place that decides."""
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU on this machine"
    return True, ""


def tensorrt_available() -> tuple[bool, str]:
    """(present, reason) for the `trt` marker: a TensorRT runtime and a GPU to run it on."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT (module tensorrt) is not installed"
    present, reason = cuda_available()
    return present, reason


def pytest_collection_modifyitems(config, items):
    checks = {"gpu": cuda_available(), "trt": tensorrt_available()}
    for item in items:
        for marker, (present, reason) in checks.items():
            if marker in item.keywords and not present:
                item.add_marker(pytest.mark.skip(reason=f"{marker}: {reason}"))


# Skips a CPU-only machine with the [dev] extra legitimately shows: no GPU, no TensorRT, or the
# opposite checks on a machine that has them. With CICM_STRICT_SKIPS=1 (CI sets it) any other skip,
# e.g. a missing cmake, scipy or tritonclient, fails the run instead of hiding a test.
HARDWARE_SKIPS = ("gpu:", "trt:", "a GPU is present", "this machine has a GPU", "TensorRT is installed here",
                  "TensorRT headers are installed")


def _strict_skip(report) -> None:
    """Under CICM_STRICT_SKIPS=1, turn a skip that is not about absent hardware into a failure."""
    if not (report.skipped and os.environ.get("CICM_STRICT_SKIPS") == "1") or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(HARDWARE_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped for a reason other than absent GPU/TensorRT hardware (CICM_STRICT_SKIPS=1): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _strict_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module-level importorskip skips the whole file at collection
    _strict_skip(outcome.get_result())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def photo(rng) -> np.ndarray:
    """A smooth RGB test image [45, 61, 3] (odd size: exercises padding)."""
    yy, xx = np.mgrid[0:45, 0:61]
    base = np.stack([np.sin(xx / 7.0), np.cos(yy / 5.0), np.sin((xx + yy) / 9.0)], axis=2)
    noise = rng.normal(0, 0.05, base.shape)
    return np.clip((base * 0.4 + 0.5 + noise) * 255, 0, 255).astype(np.uint8)


@pytest.fixture
def hole(photo) -> np.ndarray:
    mask = np.zeros(photo.shape[:2], dtype=bool)
    mask[10:25, 20:40] = True
    return mask


def diversify_memory(model, seed: int = 0) -> None:
    """Make an untrained model route like a trained one: anchors and sets become real bottleneck
    features of the shipped photos, so routes spread over the sets (random anchors send nearly
    every position to one set, which would make routing parity trivially true)."""
    import torch

    from cicm_deploy.export.goldens import make_inputs

    arrays = make_inputs([(64, 64, 4)], seed=seed)
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(arrays["s0.image"]), torch.from_numpy(arrays["s0.mask"]))
        for key, memory in model.memories.items():
            feats = out.features[key].permute(0, 2, 3, 1).reshape(-1, memory.channels)
            g = torch.Generator().manual_seed(seed)
            pick = feats[torch.randperm(len(feats), generator=g)]
            num_sets, set_size = memory.sets.shape[:2]
            if memory.anchors.numel():
                # +-v2, +-v3, ...: singular directions past the first (the mean direction), so
                # argmax routing splits positions by the signs of their main variations
                _, _, vt = torch.linalg.svd(feats, full_matrices=False)
                directions = [sign * vt[1 + i // 2] for i, sign in zip(range(num_sets), [1, -1] * num_sets)]
                memory.anchors.copy_(torch.stack(directions) * feats.norm(dim=1).mean())
            if set_size:
                memory.sets.copy_(pick[num_sets:num_sets + num_sets * set_size].reshape(num_sets, set_size, -1) * 3.0)


@pytest.fixture
def diversified():
    """diversify_memory, for tests that build their own model."""
    return diversify_memory


@pytest.fixture(scope="session")
def routed_checkpoint(tmp_path_factory):
    """A tiny checkpoint whose memory routes diversely (see diversify_memory)."""
    import torch

    from cicm_deploy.checkpoint import save_checkpoint
    from cicm_deploy.config import preset
    from cicm_deploy.model import UNetCICM

    torch.manual_seed(0)
    model = UNetCICM(preset("tiny"))
    diversify_memory(model)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "routed.pt", model)


@pytest.fixture(scope="session")
def bundles(routed_checkpoint, tmp_path_factory):
    """Bundles of the routed checkpoint, made on first use: bundles(precision, routing)."""
    from cicm_deploy.export.bundle import export_bundle

    made = {}
    root = tmp_path_factory.mktemp("bundles")

    def get(precision: str = "fp32", routing: str = "onnx"):
        key = (precision, routing)
        if key not in made:
            made[key] = export_bundle(routed_checkpoint, root / f"{precision}_{routing}",
                                      fp16=precision == "fp16", routing=routing)
        return made[key]

    return get
