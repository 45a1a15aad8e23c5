"""Shared test helpers: hardware detection for the gpu/trt markers, small models and images."""

from __future__ import annotations

import importlib.util

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
