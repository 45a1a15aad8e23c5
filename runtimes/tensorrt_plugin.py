"""CICMAugment as a TensorRT plugin written in Python (IPluginV3), for TensorRT and TensorRT for RTX.

Same contract as the C++ plugin (``runtimes/plugin/``): build-time logic (output shapes and
types, linear FP32/FP16 formats) lives here; at run time ``enqueue`` calls the compiled CUDA
kernel (``cicm_augment_launch``, from the C++ plugin library or a kernel library built with
nvcc) through ctypes on TensorRT's stream. It lets an engine be built where the C++ plugin is
not compiled (CI builds engines with it), and serves as a fallback at run time. Deploy the C++
library where you can: it needs no Python interpreter in the inference loop and no GIL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cicm_deploy.custom_op import CICM_AUGMENT, MAX_SET_SIZE
from cicm_deploy.environment import plugin_search_paths

from .kernel_cuda import CudaKernel

KERNEL_ENV_VAR = "CICM_KERNEL_LIBRARY"


def find_kernel_library() -> Path | None:
    """A shared library exporting ``cicm_augment_launch``: $CICM_KERNEL_LIBRARY or the plugin library."""
    candidates = [Path(os.environ[KERNEL_ENV_VAR])] if os.environ.get(KERNEL_ENV_VAR) else []
    candidates += plugin_search_paths()
    return next((p for p in candidates if p.is_file()), None)


def _launcher() -> Any:
    path = find_kernel_library()
    if path is None:
        raise RuntimeError(f"CICMAugment: no CUDA kernel library found (set {KERNEL_ENV_VAR} or build the plugin "
                           "library with CMake in runtimes/plugin)")
    return CudaKernel(path).function  # the launcher's ctypes signature is declared there, once


def make_plugin_classes(trt: Any) -> tuple[type, type]:
    """The plugin and creator classes, bound to the given TensorRT module (tensorrt or tensorrt_rtx)."""

    class CICMAugmentPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self, top_k: int = 0) -> None:
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.plugin_name = CICM_AUGMENT.name
            self.plugin_version = CICM_AUGMENT.version
            self.plugin_namespace = CICM_AUGMENT.namespace
            self.num_outputs = 2
            self.top_k = int(top_k)
            self.dims: tuple[int, ...] = ()
            self.table: tuple[int, int] = (0, 0)  # L, K
            self.launch = None

        def get_capability_interface(self, kind: Any) -> Any:
            return self

        def clone(self) -> Any:
            copy = CICMAugmentPlugin(self.top_k)
            copy.dims, copy.table = self.dims, self.table
            return copy

        # -- build ------------------------------------------------------------------------------
        def get_output_data_types(self, input_types: list[Any]) -> list[Any]:
            return [input_types[0], trt.DataType.INT32]

        def get_output_shapes(self, inputs: list[Any], shape_inputs: list[Any], builder: Any) -> list[Any]:
            features = inputs[0]
            route = trt.DimsExprs(3)
            route[0], route[1], route[2] = features[0], features[2], features[3]
            return [trt.DimsExprs(features), route]

        def supports_format_combination(self, pos: int, in_out: list[Any], num_inputs: int) -> bool:
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            if pos == 0:
                return desc.type in (trt.DataType.FLOAT, trt.DataType.HALF)
            if pos in (1, 4):  # gamma and augmented follow the features' type
                return desc.type == in_out[0].desc.type
            if pos in (2, 3):  # anchors, sets
                return desc.type == trt.DataType.FLOAT
            return desc.type == trt.DataType.INT32  # route

        def configure_plugin(self, inputs: list[Any], outputs: list[Any]) -> None:
            set_size = inputs[3].desc.dims[1]
            if set_size > MAX_SET_SIZE:  # as the C++ plugin: refuse at build time, not in enqueue
                raise ValueError(f"CICMAugment: set size K = {set_size} exceeds the kernel's limit of {MAX_SET_SIZE}")

        def get_workspace_size(self, inputs: list[Any], outputs: list[Any]) -> int:
            return 0

        # -- runtime ----------------------------------------------------------------------------
        def on_shape_change(self, inputs: list[Any], outputs: list[Any]) -> None:
            self.dims = tuple(inputs[0].dims)
            sets = tuple(inputs[3].dims)
            self.table = (sets[0], sets[1])

        def attach_to_context(self, context: Any) -> Any:
            return self.clone()

        def get_fields_to_serialize(self) -> Any:
            return trt.PluginFieldCollection([
                trt.PluginField("top_k", np.array([self.top_k], dtype=np.int32), trt.PluginFieldType.INT32)])

        def enqueue(self, input_desc: list[Any], output_desc: list[Any], inputs: list[int], outputs: list[int],
                    workspace: int, stream: int) -> None:
            if self.launch is None:
                self.launch = _launcher()
            b, c, h, w = self.dims
            dtype = 0 if input_desc[0].type == trt.DataType.FLOAT else 1
            status = self.launch(inputs[0], inputs[1], inputs[2], inputs[3], outputs[0], outputs[1], b, c, h, w,
                                 self.table[0], self.table[1], self.top_k, dtype, stream)
            if status != 0:
                raise RuntimeError(f"cicm_augment_launch failed with status {status}")

    class CICMAugmentCreator(trt.IPluginCreatorV3One):
        def __init__(self) -> None:
            trt.IPluginCreatorV3One.__init__(self)
            self.name = CICM_AUGMENT.name
            self.plugin_namespace = CICM_AUGMENT.namespace
            self.plugin_version = CICM_AUGMENT.version
            self.field_names = trt.PluginFieldCollection(
                [trt.PluginField("top_k", np.array([]), trt.PluginFieldType.INT32)])

        def create_plugin(self, name: str, fields: Any, phase: Any) -> Any:
            top_k = 0
            for field in fields:
                if field.name == "top_k":
                    top_k = int(np.asarray(field.data).ravel()[0])
            return CICMAugmentPlugin(top_k)

    return CICMAugmentPlugin, CICMAugmentCreator


class PluginRegistrationError(RuntimeError):
    """CICMAugment could not be made known to TensorRT's plugin registry."""


_active: dict[str, tuple[str, Any]] = {}  # TensorRT module name -> (source, the Python creator or None)


def activate_plugin(trt: Any, library: str | os.PathLike | None = None) -> None:
    """Make CICMAugment known to TensorRT: from ``library`` (the C++ plugin) or else the Python plugin.

    TensorRT refuses a second registration of a plugin name in one process (``load_library``
    returns None), so this keeps one source per process: the Python creator makes way for a
    library; a loaded library serves every later request without one (both plugins have the same
    name, version and fields); a second, different library is refused, because unloading the first
    could pull code from under engines that use it.
    """
    source = str(Path(library).resolve()) if library is not None else "python"
    current = _active.get(trt.__name__)
    if current is not None and (current[0] == source or library is None):
        return
    registry = trt.get_plugin_registry()
    if current is not None and current[0] != "python":
        raise PluginRegistrationError(f"the plugin library {current[0]} is already loaded in this process and "
                                      f"cannot be swapped for {library}; use one plugin library per process")
    if current is not None:
        registry.deregister_creator(current[1])
        del _active[trt.__name__]
    elif registry.get_creator(CICM_AUGMENT.name, CICM_AUGMENT.version, CICM_AUGMENT.namespace) is not None:
        raise PluginRegistrationError(f"a {CICM_AUGMENT.name} plugin is already registered in this process by code "
                                      "outside cicm-deploy; run the build or engine in a fresh process")
    if library is not None:
        if registry.load_library(str(library)) is None:
            raise PluginRegistrationError(f"TensorRT could not load the plugin library {library} (built for another "
                                          "TensorRT version?)")
        _active[trt.__name__] = (source, None)
        return
    _, creator_class = make_plugin_classes(trt)
    creator = creator_class()
    if not registry.register_creator(creator, CICM_AUGMENT.namespace):
        raise PluginRegistrationError(f"TensorRT refused to register the Python {CICM_AUGMENT.name} creator")
    _active[trt.__name__] = (source, creator)  # the registry does not keep the Python object alive
