"""The CICMAugment CUDA kernel on its own: built with nvcc, called through ctypes on device pointers.

``runtimes/plugin/cicm_augment_kernel.cu`` compiled alone (no TensorRT) gives a library exporting
``cicm_augment_launch``: what the Python plugin calls at run time (``CICM_KERNEL_LIBRARY``), and
what the GPU tests and ``benchmarks/cuda_kernel.py`` run against the PyTorch reference. Pointers
are plain integers (``tensor.data_ptr()``, a cudaStream_t handle), so no torch import here.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

from .kernel_host import PLUGIN_DIR, compile_library

SOURCES = ("cicm_augment_kernel.cu", "cicm_augment_kernel.cuh")
FLOAT32, FLOAT16 = 0, 1  # CicmDataType
STATUS = {1: "bad argument", 2: "set size above 256", 3: "CUDA launch error"}  # CicmStatus


class KernelError(RuntimeError):
    """The kernel library cannot be built, or a launch returned an error status."""


def library_name(arch: str) -> str:
    return f"libcicm_augment_kernel_sm{arch}.so"


def build_kernel_library(out_dir: str | os.PathLike, arch: str, nvcc: str | None = None) -> Path:
    """Compile the kernel for compute capability ``arch`` ("90", "87", ...) into ``out_dir``.

    Built once; rebuilt when a source is newer than the library.
    """
    if not arch.isdigit():
        raise KernelError(f"arch must be a compute capability without the dot, such as 90 or 87, got {arch!r}")
    nvcc = nvcc or os.environ.get("NVCC") or shutil.which("nvcc")
    if not nvcc:
        raise KernelError("nvcc not found: install the CUDA toolkit (or set NVCC) to build the CICMAugment kernel")
    # Same flags as the plugin's kernel in CMakeLists.txt: hidden visibility, the launcher exported.
    return compile_library([nvcc, "-O3", "-std=c++17", "-shared", f"-arch=sm_{arch}", "-lineinfo", "-Xcompiler",
                            "-fPIC", "-Xcompiler", "-fvisibility=hidden", str(PLUGIN_DIR / SOURCES[0])],
                           Path(out_dir) / library_name(arch), SOURCES, KernelError)


class CudaKernel:
    """``launch(...)`` of ``cicm_augment_launch`` from a kernel or plugin library."""

    def __init__(self, library: str | os.PathLike) -> None:
        self.library = Path(library)
        try:
            fn = ctypes.CDLL(str(self.library)).cicm_augment_launch
        except (OSError, AttributeError) as exc:
            raise KernelError(f"{self.library}: not a library exporting cicm_augment_launch ({exc}); rebuild it "
                              "with build_kernel_library() or the plugin's CMake") from None
        fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int] * 8 + [ctypes.c_void_p]
        fn.restype = ctypes.c_int
        self.function = fn  # the bound cicm_augment_launch (the Python plugin calls it directly)

    def launch(self, features: int, gamma: int, anchors: int, sets: int, out: int, route: int | None,
               shape: tuple[int, int, int, int], num_sets: int, set_size: int, top_k: int = 0,
               half: bool = False, stream: int = 0) -> None:
        """Enqueue one call on ``stream``; ``shape`` is the features' (B, C, H, W).

        features/gamma/out are device pointers of FP32 (or FP16 with ``half``) data; anchors and
        sets FP32; route an int32 [B, H, W] pointer or None.
        """
        b, c, h, w = shape
        status = self.function(features, gamma, anchors, sets, out, route, b, c, h, w, num_sets, set_size,
                              top_k, FLOAT16 if half else FLOAT32, stream or None)
        if status != 0:
            raise KernelError(f"cicm_augment_launch returned {status} ({STATUS.get(status, 'unknown status')})")

    def augment(self, features, gamma, anchors, sets, top_k: int = 0):
        """Run on torch CUDA tensors (torch imported by the caller): features [B, C, H, W] and gamma
        [B, 1, H, W], both FP32 or both FP16; anchors [L, C] and sets [L, K, C], on the same GPU.
        Returns (augmented, route int32 [B, H, W]), enqueued on that GPU's current stream."""
        import torch

        if not (features.is_cuda and gamma.is_cuda and features.dtype == gamma.dtype
                and features.dtype in (torch.float32, torch.float16)):
            raise KernelError(f"features and gamma must be CUDA tensors of one type, float32 or float16; got "
                              f"{features.dtype} on {features.device} and {gamma.dtype} on {gamma.device}")
        elsewhere = [f"{name} on {t.device}" for name, t in (("gamma", gamma), ("anchors", anchors), ("sets", sets))
                     if t.device != features.device]
        if elsewhere:
            raise KernelError(f"all tensors must be on the features' device {features.device}; got "
                              + ", ".join(elsewhere))
        b, c, h, w = features.shape
        num_sets, set_size = sets.shape[:2]
        if tuple(anchors.shape) != (num_sets, c) or tuple(sets.shape) != (num_sets, set_size, c) \
                or tuple(gamma.shape) != (b, 1, h, w):
            raise KernelError(f"shapes do not agree: features {list(features.shape)}, gamma {list(gamma.shape)}, "
                              f"anchors {list(anchors.shape)}, sets {list(sets.shape)}")
        with torch.cuda.device(features.device):
            features, gamma = features.contiguous(), gamma.contiguous()
            anchors = anchors.detach().float().contiguous()
            sets = sets.detach().float().contiguous()
            out = torch.empty_like(features)
            route = torch.empty((b, h, w), dtype=torch.int32, device=features.device)
            self.launch(features.data_ptr(), gamma.data_ptr(), anchors.data_ptr(), sets.data_ptr(), out.data_ptr(),
                        route.data_ptr(), (b, c, h, w), num_sets, set_size, top_k,
                        half=features.dtype == torch.float16,
                        stream=torch.cuda.current_stream(features.device).cuda_stream)
        return out, route
