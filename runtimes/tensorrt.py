"""TensorRT runtime (desktop and Jetson alike): an engine built by ``cicm-deploy build``. No torch.

Before anything touches the GPU, the engine's sidecar is checked against this machine: the
TensorRT module and version that built it, the GPU's compute capability, the plugin library's
hash, and the bundle's files. A mismatch is one clear error ("rebuild with cicm-deploy build")
instead of a deserialization crash. Device memory and the stream come from Polygraphy's CUDA
wrapper (ctypes over libcudart: no torch, no extra CUDA wheel); inference is
``execute_async_v3`` on the runtime's own stream, with input shapes set per call inside the
engine's optimization profile.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendUnavailableError, Runtime, RuntimeInputError
from .bundle import open_bundle
from .tensorrt_build import (RTX_INSTALL, SIDECAR_SUFFIX, TENSORRT_INSTALL, EngineBuildError, gpu_description,
                             import_tensorrt)


class EngineMismatchError(BackendUnavailableError):
    """The engine was built for another TensorRT, GPU, plugin library or bundle."""


# What the runtime reads from a sidecar (`cicm-deploy build` writes these and more).
SIDECAR_KEYS = ("bundle", "bundle_files", "tensorrt_module", "tensorrt_version", "gpu", "profile", "inputs",
                "outputs", "precision", "routing")


def read_sidecar(engine: Path) -> dict[str, Any]:
    path = engine.with_name(engine.name + SIDECAR_SUFFIX)
    if not engine.is_file():
        raise BackendUnavailableError(f"engine {engine} does not exist; build one with `cicm-deploy build BUNDLE -o "
                                      f"{engine}`")
    if not path.is_file():
        raise BackendUnavailableError(
            f"engine {engine} has no sidecar {path.name} beside it. `cicm-deploy build` writes the two together "
            "(copy both); an engine from trtexec or Polygraphy has none, and this runtime needs it to check the "
            f"bundle, TensorRT version and GPU before loading: build one with `cicm-deploy build BUNDLE -o {engine}`")
    try:
        sidecar = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BackendUnavailableError(f"{path} is not valid JSON ({exc}); rebuild the engine") from None
    missing = [key for key in SIDECAR_KEYS if key not in sidecar] if isinstance(sidecar, dict) else list(SIDECAR_KEYS)
    if missing:
        raise BackendUnavailableError(f"{path} lacks {', '.join(missing)} (not written by `cicm-deploy build`, or "
                                      "edited); rebuild the engine")
    return sidecar


RTX_PORTABLE_MIN = (8, 0)  # TensorRT for RTX: an engine built without --sm runs on 8.0 and later (Turing needs --sm 75)


def _capability(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def check_sidecar(sidecar: dict[str, Any], trt: Any, gpu: dict[str, Any] | None, engine: Path,
                  plugin: Path | None) -> None:
    """Every way an engine can fail to fit this machine, as one EngineMismatchError line."""
    rebuild = "rebuild it here with `cicm-deploy build`"
    if sidecar.get("engine_sha256") and hashlib.sha256(engine.read_bytes()).hexdigest() != sidecar["engine_sha256"]:
        raise EngineMismatchError(f"{engine} does not match its sidecar (modified or truncated); {rebuild}")
    if sidecar["tensorrt_module"] != trt.__name__ or sidecar["tensorrt_version"] != trt.__version__:
        raise EngineMismatchError(f"{engine} was built with {sidecar['tensorrt_module']} {sidecar['tensorrt_version']}; "
                                  f"this machine has {trt.__name__} {trt.__version__}: {rebuild}")
    if gpu is None:
        raise BackendUnavailableError("no CUDA GPU is visible on this machine (or cuda-python is missing): a TensorRT "
                                      "engine runs only on the GPU it was built for")
    built_for = (sidecar.get("gpu") or {}).get("compute_capability")
    target = sidecar.get("target_compute_capability")
    here = gpu["compute_capability"]
    sm_here = here.replace(".", "")
    if sidecar["tensorrt_module"] == "tensorrt_rtx":  # built for targets, not for the GPU it was built on
        if target and target.upper() != "SM" + sm_here:
            raise EngineMismatchError(f"{engine} was built ahead of time for {target}; this GPU ({gpu['name']}) is "
                                      f"compute capability {here}: {rebuild} --rtx --sm {sm_here}")
        if not target and _capability(here) < RTX_PORTABLE_MIN:
            raise EngineMismatchError(f"{engine} was built for TensorRT for RTX's default targets (compute capability "
                                      f"8.0 and later); this GPU ({gpu['name']}) is {here}: {rebuild} --rtx --sm "
                                      f"{sm_here}")
    elif built_for and built_for != here:
        raise EngineMismatchError(f"{engine} was built on a GPU of compute capability {built_for} "
                                  f"({sidecar['gpu']['name']}); this GPU ({gpu['name']}) is {here}: {rebuild}")
    info = sidecar.get("plugin")
    if info and info.get("kind") == "library":
        library = plugin or Path(info["path"])
        if not library.is_file():
            raise EngineMismatchError(f"the engine needs the CICMAugment plugin library {library}, which is missing; "
                                      "pass --plugin LIB or build it with CMake in runtimes/plugin")
        if hashlib.sha256(library.read_bytes()).hexdigest() != info["sha256"]:
            raise EngineMismatchError(f"plugin library {library} is not the one the engine was built with; {rebuild}")
    elif info and plugin is not None and not plugin.is_file():
        raise EngineMismatchError(f"plugin library {plugin} does not exist")
    elif info and plugin is None:  # the Python plugin runs the kernel from a compiled library
        from .tensorrt_plugin import KERNEL_ENV_VAR, find_kernel_library

        if find_kernel_library() is None:
            raise EngineMismatchError(f"{engine} was built with the Python CICMAugment plugin, which runs the CUDA "
                                      "kernel from the plugin library: build it with CMake in runtimes/plugin and set "
                                      f"CICM_PLUGIN_LIBRARY (or {KERNEL_ENV_VAR}), or pass --plugin LIB")


class TensorRTBackend(Runtime):
    backend = "tensorrt"

    def __init__(self, engine: str | os.PathLike, *, bundle: str | os.PathLike | None = None,
                 plugin: str | os.PathLike | None = None) -> None:
        self.engine_path = Path(engine)
        self.sidecar = read_sidecar(self.engine_path)
        super().__init__(open_bundle(bundle or self.sidecar["bundle"]))
        if self.bundle.manifest["files"] != self.sidecar["bundle_files"]:
            raise EngineMismatchError(f"{self.engine_path} was built from another bundle than {self.bundle.path}; "
                                      "rebuild it with `cicm-deploy build`")
        self.plugin = Path(plugin) if plugin else None
        self.trt: Any = None
        self.engine: Any = None
        self.context: Any = None
        self.stream: Any = None
        self.buffers: dict[str, Any] = {}

    def _load(self) -> None:
        rtx = self.sidecar["tensorrt_module"] == "tensorrt_rtx"
        try:
            self.trt = import_tensorrt(rtx)
        except EngineBuildError:  # the engine runs only on the module it was built with: no --rtx advice here
            raise BackendUnavailableError(
                f"{self.engine_path} was built with {self.sidecar['tensorrt_module']} "
                f"{self.sidecar['tensorrt_version']}, which is not installed here: "
                f"{RTX_INSTALL if rtx else TENSORRT_INSTALL}") from None
        check_sidecar(self.sidecar, self.trt, gpu_description(), self.engine_path, self.plugin)
        logger = self.trt.Logger(self.trt.Logger.WARNING)
        if self.bundle.custom_ops:
            from .tensorrt_plugin import PluginRegistrationError, activate_plugin

            info = self.sidecar.get("plugin") or {}
            # --plugin wins: the C++ and Python plugins share name, version and fields, so either
            # deserializes an engine built with the other.
            library = self.plugin or (Path(info["path"]) if info.get("kind") == "library" else None)
            try:
                activate_plugin(self.trt, library)
            except PluginRegistrationError as exc:
                raise BackendUnavailableError(str(exc)) from None
        runtime = self.trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise BackendUnavailableError(f"TensorRT could not deserialize {self.engine_path} (see its log); "
                                          "rebuild it with `cicm-deploy build` on this machine")
        self.context = self.engine.create_execution_context()
        from polygraphy.cuda import Stream

        self.stream = Stream()

    def _close(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()
        self.buffers.clear()
        if self.stream is not None:
            self.stream.free()
        self.context = self.engine = self.stream = None

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """A device buffer per tensor, reused across calls and resized when the shape changes."""
        from polygraphy.cuda import DeviceArray
        from polygraphy.datatype import DataType

        kind = DataType.from_dtype(np.dtype(dtype))
        buffer = self.buffers.get(name)
        if buffer is None or buffer.dtype != kind:
            if buffer is not None:
                buffer.free()
            buffer = self.buffers[name] = DeviceArray(shape=shape, dtype=kind)
        elif tuple(buffer.shape) != shape:
            buffer.resize(shape)
        return buffer

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        profile = self.sidecar["profile"]
        b, _, h, w = feeds["image"].shape
        if not all(lo <= v <= hi for v, lo, hi in zip((b, h, w), profile["min"], profile["max"])):
            raise RuntimeInputError(f"input batch {b}, {h}x{w} lies outside the engine's profile (min {profile['min']}, "
                                    f"max {profile['max']} as batch, height, width); rebuild with --min-shape/--max-shape")
        for name, value in feeds.items():
            self.context.set_input_shape(name, value.shape)
            buffer = self._buffer(name, value.shape, value.dtype)
            buffer.copy_from(np.ascontiguousarray(value), self.stream)
            self.context.set_tensor_address(name, buffer.ptr)
        outputs = {}
        for spec in self.bundle.manifest["outputs"]:
            shape = tuple(self.context.get_tensor_shape(spec["name"]))
            buffer = self._buffer(spec["name"], shape, np.dtype(spec["dtype"]))
            self.context.set_tensor_address(spec["name"], buffer.ptr)
            outputs[spec["name"]] = np.empty(shape, dtype=spec["dtype"])
        if not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log)")
        for name, host in outputs.items():
            self.buffers[name].copy_to(host, self.stream)
        self.stream.synchronize()
        return outputs  # Runtime.run checks them for NaN/Inf

    def describe(self) -> dict[str, Any]:
        gpu = gpu_description()
        return {"backend": self.backend, "device": gpu["name"] if gpu else "no GPU", "precision": self.bundle.precision,
                "routing": self.bundle.routing, "engine": str(self.engine_path), "bundle": str(self.bundle.path),
                "versions": {self.sidecar["tensorrt_module"]: self.sidecar["tensorrt_version"]},
                "profile": self.sidecar["profile"], "plugin": self.sidecar.get("plugin")}
