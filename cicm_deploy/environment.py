"""What this machine can run: Python, torch/CUDA, onnxruntime, TensorRT, the CICM plugin.

Each probe returns a plain dict and never raises: ``cicm-deploy doctor`` prints them, runtimes
quote them in ``describe()``. torch is imported only by ``probe_torch`` and only when installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__

PLUGIN_LIBRARY_NAME = "libcicm_augment_plugin.so"
PLUGIN_ENV_VAR = "CICM_PLUGIN_LIBRARY"


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def probe_system() -> dict[str, Any]:
    tegra = Path("/etc/nv_tegra_release")
    return {
        "cicm_deploy": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "jetson": tegra.read_text(errors="replace").splitlines()[0].strip("# ") if tegra.exists() else None,
    }


def probe_torch() -> dict[str, Any]:
    version = _dist_version("torch")
    if version is None or importlib.util.find_spec("torch") is None:
        return {"installed": False, "hint": "pip install 'cicm-deploy[train]' for training and the PyTorch backend"}
    try:
        import torch
    except Exception as exc:  # a broken install is worth reporting, not crashing on
        return {"installed": True, "version": version, "error": f"import failed: {exc}"}
    info: dict[str, Any] = {"installed": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available(), "gpus": []}
    if info["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["gpus"].append({"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                                 "memory_gib": round(props.total_memory / 2**30, 1)})
    return info


def probe_onnxruntime() -> dict[str, Any]:
    dists = {name: _dist_version(name) for name in ("onnxruntime", "onnxruntime-gpu")}
    installed = {k: v for k, v in dists.items() if v}
    info: dict[str, Any] = {"installed": bool(installed), "distributions": installed}
    if len(installed) > 1:
        info["problem"] = ("both onnxruntime and onnxruntime-gpu are installed; they provide the same module and "
                           "break each other: pip uninstall -y onnxruntime onnxruntime-gpu, then install one "
                           "('cicm-deploy[cpu]' or 'cicm-deploy[gpu]')")
    if not installed:
        info["hint"] = "pip install 'cicm-deploy[cpu]' (or '[gpu]' on a CUDA machine)"
        return info
    try:
        ort = importlib.import_module("onnxruntime")
        info["version"] = ort.__version__
        info["providers"] = list(ort.get_available_providers())
    except Exception as exc:
        info["error"] = f"import failed: {exc}"
    return info


def probe_tensorrt() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for module in ("tensorrt", "tensorrt_rtx"):
        if importlib.util.find_spec(module) is None:
            continue
        try:
            found[module] = importlib.import_module(module).__version__
        except Exception as exc:
            found[module] = f"import failed: {exc}"
    info: dict[str, Any] = {"installed": bool(found), "modules": found}
    if not found:
        info["hint"] = "TensorRT comes with JetPack or NVIDIA's TensorRT install; it is never a pip dependency here"
    return info


def plugin_search_paths() -> list[Path]:
    """Where the CICMAugment TensorRT plugin library is looked for, in order."""
    paths = []
    if os.environ.get(PLUGIN_ENV_VAR):
        paths.append(Path(os.environ[PLUGIN_ENV_VAR]))
    source_tree = Path(__file__).resolve().parent.parent / "runtimes" / "plugin" / "build"
    paths += [source_tree / PLUGIN_LIBRARY_NAME, Path.home() / ".cache" / "cicm-deploy" / PLUGIN_LIBRARY_NAME]
    return paths


def probe_plugin() -> dict[str, Any]:
    searched = plugin_search_paths()
    for path in searched:
        if path.is_file():
            return {"found": True, "path": str(path)}
    return {"found": False, "searched": [str(p) for p in searched],
            "hint": f"set {PLUGIN_ENV_VAR} to the plugin library built from runtimes/plugin"}


def probe_gpu() -> dict[str, Any]:
    """GPU 0 through cuda-python (no torch needed), as the TensorRT runtime sees it."""
    from cicm_deploy.runtimes.tensorrt_build import gpu_description

    gpu = gpu_description()
    if gpu is not None:
        return {"found": True, **gpu}
    return {"found": False, "hint": gpu_hint(driver_cuda_version(), _dist_version("cuda-python"))}


def driver_cuda_version() -> tuple[int, int] | None:
    """The CUDA version the installed driver supports (libcuda's cuDriverGetVersion), or None."""
    import ctypes

    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return version.value // 1000, version.value % 1000 // 10


def gpu_hint(driver: tuple[int, int] | None, cuda_python: str | None) -> str:
    """Why no GPU is visible, from the driver's CUDA version and the installed cuda-python."""
    if driver is None:
        return "no CUDA driver on this machine (libcuda.so.1 not found)"
    if cuda_python is None:
        return (f"a CUDA {driver[0]}.{driver[1]} driver is present but cuda-python is not installed: "
                f"pip install 'cicm-deploy[trt-runtime]' 'cuda-python<{driver[0] + 1}'")
    major = int(cuda_python.split(".")[0])
    if major > driver[0]:
        return (f"cuda-python {cuda_python} needs a CUDA {major} driver; this driver supports CUDA "
                f"{driver[0]}.{driver[1]}: pip install 'cuda-python<{driver[0] + 1}'")
    return f"the CUDA {driver[0]}.{driver[1]} driver reports no usable GPU to cuda-python {cuda_python}"


def probe_all() -> dict[str, dict[str, Any]]:
    return {"system": probe_system(), "torch": probe_torch(), "onnxruntime": probe_onnxruntime(),
            "gpu": probe_gpu(), "tensorrt": probe_tensorrt(), "plugin": probe_plugin()}


def next_steps(report: dict[str, dict[str, Any]]) -> list[str]:
    """What to install or build next, from a ``probe_all`` report."""
    steps = []
    if not report["onnxruntime"]["installed"]:
        steps.append("pip install 'cicm-deploy[cpu]' (or '[gpu]') to run bundles with onnxruntime")
    if report["onnxruntime"].get("problem"):
        steps.append(report["onnxruntime"]["problem"])
    trt = report["tensorrt"]
    if "tensorrt" in trt.get("modules", {}):
        if report["gpu"]["found"]:
            steps.append("build an engine here: cicm-deploy build BUNDLE -o model.engine")
        if not report["plugin"]["found"]:
            cc = report["gpu"].get("compute_capability", "87").replace(".", "")
            steps.append("for plugin-routed bundles, build the plugin: cmake -S runtimes/plugin -B runtimes/plugin/build "
                         f"-DCMAKE_CUDA_ARCHITECTURES={cc} && cmake --build runtimes/plugin/build")
    elif "tensorrt_rtx" in trt.get("modules", {}):
        steps.append("only TensorRT for RTX is installed: build engines with cicm-deploy build BUNDLE --rtx "
                     "(GeForce and RTX GPUs, Turing and later; for Jetson or data-centre GPUs install TensorRT itself)")
    elif report["gpu"]["found"]:
        steps.append("TensorRT is missing: on a Jetson, apt install python3-libnvinfer; on a desktop, NVIDIA's "
                     "TensorRT install (or pip install 'cicm-deploy[rtx]' for TensorRT for RTX)")
    return steps
