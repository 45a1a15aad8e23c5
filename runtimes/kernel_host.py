"""The CICMAugment kernel's per-position math, built for the CPU and called through ctypes.

``runtimes/plugin/cicm_augment_host.cpp`` compiles the same ``__host__ __device__`` function the
CUDA kernel runs (``cicm_augment_kernel.cuh``) into a small shared library, so the kernel's math
is tested on machines without a GPU, against the numpy reference op and PyTorch. No torch.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"
SOURCES = ("cicm_augment_host.cpp", "cicm_augment_kernel.cuh")
LIBRARY_NAME = "libcicm_augment_host.so"


class HostKernelError(RuntimeError):
    """The host library cannot be built or a call failed."""


def compile_library(command: list[str], out: Path, sources: tuple[str, ...],
                    error: type[Exception] = HostKernelError) -> Path:
    """Run ``command + ["-o", OUT]`` unless ``out`` is newer than every plugin source in ``sources``.

    The compiler writes to a temporary name that replaces ``out`` only when it succeeds, so a
    failed or killed build leaves no library behind to be loaded later.
    """
    newest = max((PLUGIN_DIR / s).stat().st_mtime for s in sources)
    if out.exists() and out.stat().st_mtime >= newest:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + f".{os.getpid()}.part")
    try:
        done = subprocess.run(command + ["-o", str(partial)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise error(f"building {out.name} failed:\n{done.stderr.strip()}")
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def build_host_library(out_dir: str | os.PathLike, compiler: str | None = None) -> Path:
    """Compile the host library into ``out_dir`` (once; rebuilt when a source is newer)."""
    compiler = compiler or os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise HostKernelError("no C++ compiler found (install g++ or set CXX) to build the CICMAugment host library")
    return compile_library([compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
                            str(PLUGIN_DIR / SOURCES[0])], Path(out_dir) / LIBRARY_NAME, SOURCES)


class HostKernel:
    """ctypes binding of the host library: ``augment(features, gamma, anchors, sets, top_k)``."""

    def __init__(self, library: str | os.PathLike) -> None:
        self.lib = ctypes.CDLL(str(library))
        pointer = ctypes.c_void_p
        for name in ("cicm_augment_host_f32", "cicm_augment_host_f16"):
            fn = getattr(self.lib, name)
            fn.argtypes = [pointer] * 6 + [ctypes.c_int] * 7
            fn.restype = ctypes.c_int
        self.lib.cicm_float_to_half.argtypes = [ctypes.c_float]
        self.lib.cicm_float_to_half.restype = ctypes.c_uint16
        self.lib.cicm_half_to_float.argtypes = [ctypes.c_uint16]
        self.lib.cicm_half_to_float.restype = ctypes.c_float

    def augment(self, features: np.ndarray, gamma: np.ndarray, anchors: np.ndarray, sets: np.ndarray,
                top_k: int = 0, with_route: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Same contract as ``reference_op.cicm_augment``: float32 or float16 features/gamma."""
        dtype = features.dtype
        if dtype not in (np.float32, np.float16) or gamma.dtype != dtype:
            raise HostKernelError(f"features and gamma must both be float32 or float16, got {features.dtype} and "
                                  f"{gamma.dtype}")
        b, c, h, w = features.shape
        num_sets, set_size, channels = sets.shape
        if anchors.shape != (num_sets, c) or channels != c or gamma.shape != (b, 1, h, w):
            raise HostKernelError(f"shapes do not agree: features {features.shape}, gamma {gamma.shape}, anchors "
                                  f"{anchors.shape}, sets {sets.shape}")
        features, gamma = np.ascontiguousarray(features), np.ascontiguousarray(gamma)
        anchors = np.ascontiguousarray(anchors, dtype=np.float32)
        sets = np.ascontiguousarray(sets, dtype=np.float32)
        out = np.empty_like(features)
        route = np.empty((b, h, w), dtype=np.int32) if with_route else None
        fn = self.lib.cicm_augment_host_f32 if dtype == np.float32 else self.lib.cicm_augment_host_f16
        status = fn(features.ctypes.data, gamma.ctypes.data, anchors.ctypes.data, sets.ctypes.data, out.ctypes.data,
                    route.ctypes.data if route is not None else None, b, c, h, w, num_sets, set_size, int(top_k))
        if status != 0:
            raise HostKernelError(f"cicm_augment_host returned status {status} (1 bad argument, 2 set size > 256)")
        return out, route
