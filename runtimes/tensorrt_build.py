"""``cicm-deploy build``: a bundle -> a TensorRT engine, built on the target. No torch.

The network is strongly typed (TensorRT 10+): every tensor takes its type from the ONNX, so an
FP16 bundle gives FP16 convolutions and FP32 routing without builder precision flags (TensorRT
11 has none). Dynamic axes get one optimization profile (min/opt/max from the flags, clamped to
the bundle's static dimensions and rounded to its stride). TensorRT for RTX (``--rtx``, module
``tensorrt_rtx``) builds ahead of time for a chosen compute capability, with or without a GPU.

Beside the engine goes a sidecar JSON (TensorRT module and version, GPU or target compute
capability, plugin library hash, bundle hashes, profile) so that loading an engine on the wrong
TensorRT, GPU or bundle gives a clear error instead of a crash.
"""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import importlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cicm_deploy import CICMWarning, __version__
from cicm_deploy.files import atomic_write

from .bundle import Bundle, open_bundle, sha256_file

SIDECAR_SUFFIX = ".json"
DEFAULT_MIN = (1, 64, 64)
DEFAULT_OPT = (1, 256, 256)
DEFAULT_MAX = (4, 1024, 1024)


class EngineBuildError(RuntimeError):
    """The engine cannot be built (library missing, parse or build failure)."""


TENSORRT_INSTALL = "it comes with JetPack (apt install python3-libnvinfer) or NVIDIA's TensorRT install"
RTX_INSTALL = "pip install 'cicm-deploy[rtx]'"


def import_tensorrt(rtx: bool = False) -> Any:
    """The ``tensorrt`` module (or ``tensorrt_rtx``), with a message saying how to get it (for a build)."""
    name = "tensorrt_rtx" if rtx else "tensorrt"
    if importlib.util.find_spec(name) is None:
        if rtx:
            raise EngineBuildError(f"TensorRT for RTX is not installed: {RTX_INSTALL}")
        raise EngineBuildError(f"TensorRT's Python module is not installed: {TENSORRT_INSTALL}; on an RTX desktop, "
                               f"--rtx builds with TensorRT for RTX ({RTX_INSTALL})")
    if rtx:
        _make_rtx_library_findable()
    return importlib.import_module(name)


def _make_rtx_library_findable() -> None:
    """TensorRT for RTX's ONNX parser dlopen()s ``libtensorrt_rtx.so`` for plugin nodes and aborts
    the process when it cannot find it; its wheel ships only ``libtensorrt_rtx.so.1``. Loading
    the library globally first makes the name resolvable without touching LD_LIBRARY_PATH."""
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = Path(list(spec.submodule_search_locations)[0])
    for candidate in sorted(folder.glob("libtensorrt_rtx.so*")):
        try:
            ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        link = folder / "libtensorrt_rtx.so"
        if not link.exists():
            try:
                link.symlink_to(candidate.name)
            except OSError:
                pass  # read-only site-packages: the global load above is what the parser finds first
        return


@dataclass(frozen=True)
class Profile:
    min: tuple[int, int, int]  # batch, height, width
    opt: tuple[int, int, int]
    max: tuple[int, int, int]


def resolve_profile(bundle: Bundle, min_shape: tuple[int, int, int] | None, opt_shape: tuple[int, int, int] | None,
                    max_shape: tuple[int, int, int] | None) -> Profile:
    """min/opt/max (batch, H, W): static dims from the bundle win; H, W rounded up to the stride."""
    spec = {i["name"]: i["shape"] for i in bundle.manifest["inputs"]}["image"]
    stride = bundle.stride

    def fix(shape: tuple[int, int, int]) -> tuple[int, int, int]:
        b, h, w = shape
        values = [b, h, w]
        for index, axis in enumerate((0, 2, 3)):
            if isinstance(spec[axis], int) and spec[axis] > 0:
                values[index] = spec[axis]
        values[1] = -(-values[1] // stride) * stride
        values[2] = -(-values[2] // stride) * stride
        return values[0], values[1], values[2]

    profile = Profile(fix(min_shape or DEFAULT_MIN), fix(opt_shape or DEFAULT_OPT), fix(max_shape or DEFAULT_MAX))
    for i in range(3):
        if not profile.min[i] <= profile.opt[i] <= profile.max[i]:
            raise EngineBuildError(f"profile must satisfy min <= opt <= max per dimension (batch, height, width); got "
                                   f"min {profile.min}, opt {profile.opt}, max {profile.max}")
    return profile


def _network_flags(trt: Any) -> int:
    flags = 0
    names = dir(trt.NetworkDefinitionCreationFlag)
    if "STRONGLY_TYPED" in names:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif "EXPLICIT_BATCH" in names:  # TensorRT < 10: explicit batch; no precision flags are set, so it builds FP32
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return flags


def gpu_description() -> dict[str, Any] | None:
    """Name and compute capability of GPU 0 through cuda-python, or None where there is none."""
    if importlib.util.find_spec("cuda") is None:
        return None
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError:
            return None
    try:
        err, props = cudart.cudaGetDeviceProperties(0)
    except Exception:
        return None
    if int(err) != 0:
        return None
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.strip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}


def _progress_monitor(trt: Any, report: Callable[[str], None]) -> Any:
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:  # top-level phases only: the nested ones repeat per subgraph
                report(f"{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()


def build_engine(bundle_path: str | os.PathLike, output: str | os.PathLike, *, rtx: bool = False,
                 sm: str | None = None, plugin: str | os.PathLike | None = None, workspace_mb: int | None = None,
                 timing_cache: str | os.PathLike | None = None, min_shape: tuple[int, int, int] | None = None,
                 opt_shape: tuple[int, int, int] | None = None, max_shape: tuple[int, int, int] | None = None,
                 progress: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Build and write the engine and its sidecar; returns the sidecar."""
    bundle = open_bundle(bundle_path)  # the user's own mistakes first, then what this machine lacks
    profile = resolve_profile(bundle, min_shape, opt_shape, max_shape)
    if sm and not rtx:
        raise EngineBuildError("--sm chooses the target of an ahead-of-time build and needs --rtx; a TensorRT "
                               "engine is built for the GPU it is built on")
    if plugin is not None and not bundle.custom_ops:
        warnings.warn(f"{bundle.path} routes with standard ONNX ops (no CICMAugment node): the plugin library "
                      f"{plugin} is not used", CICMWarning, stacklevel=2)
    trt = import_tensorrt(rtx)
    logger = trt.Logger(trt.Logger.WARNING)
    plugin_info = None
    if bundle.custom_ops:
        plugin_info = _register_plugin(trt, plugin)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    progress(f"parsing {bundle.model_path}")
    if not parser.parse_from_file(str(bundle.model_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {bundle.model_path}: {errors}")
    layers = _layer_summary(trt, network)
    if bundle.custom_ops and not any("PLUGIN" in kind for kind in layers):
        raise EngineBuildError(f"the parsed network has no plugin layer for {bundle.custom_ops[0]['name']}: {layers}")
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    target_cc = None
    if rtx:
        if sm:
            try:
                capability = getattr(trt.ComputeCapability, sm.upper() if sm.lower().startswith("sm") else f"SM{sm}")
            except AttributeError:
                known = [n for n in dir(trt.ComputeCapability) if n.startswith("SM")]
                raise EngineBuildError(f"--sm {sm} is not a compute capability TensorRT for RTX knows: {known}") from None
            config.num_compute_capabilities = 1
            config.set_compute_capability(capability, 0)
            target_cc = str(capability).split(".")[-1]
    cache = None
    if timing_cache and hasattr(config, "create_timing_cache"):
        data = Path(timing_cache).read_bytes() if Path(timing_cache).exists() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    monitor = _progress_monitor(trt, progress)
    if monitor is not None and hasattr(config, "progress_monitor"):
        config.progress_monitor = monitor
    opt_profile = builder.create_optimization_profile()
    for name, channels in (("image", 3), ("mask", 1)):
        opt_profile.set_shape(name, (profile.min[0], channels, *profile.min[1:]),
                              (profile.opt[0], channels, *profile.opt[1:]), (profile.max[0], channels, *profile.max[1:]))
    config.add_optimization_profile(opt_profile)
    progress("building the engine (minutes on a Jetson)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        hint = (f"; if it reports OutOfMemory, raise --workspace (now {workspace_mb} MiB) or lower --max-shape "
                f"{'x'.join(map(str, profile.max))}" if workspace_mb else "")
        raise EngineBuildError(f"TensorRT failed to build the engine (see its log above){hint}")
    output = atomic_write(output, lambda handle: handle.write(memoryview(serialized)))
    if cache is not None:
        Path(timing_cache).write_bytes(memoryview(cache.serialize()))
    sidecar = {
        "engine": output.name, "engine_sha256": sha256_file(output),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cicm_deploy": __version__, "tensorrt_module": trt.__name__, "tensorrt_version": trt.__version__,
        "gpu": gpu_description(), "target_compute_capability": target_cc,
        "bundle": str(bundle.path.resolve()), "bundle_files": bundle.manifest["files"],
        "precision": bundle.precision, "routing": bundle.routing,
        "profile": {"min": profile.min, "opt": profile.opt, "max": profile.max},
        "plugin": plugin_info, "layers": layers,
        "inputs": bundle.manifest["inputs"], "outputs": bundle.manifest["outputs"],
    }
    output.with_name(output.name + SIDECAR_SUFFIX).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def _layer_summary(trt: Any, network: Any) -> dict[str, int]:
    """Layer types of the parsed network and how many of each (PLUGIN_V3 marks CICMAugment)."""
    counts: dict[str, int] = {}
    for index in range(network.num_layers):
        kind = str(network.get_layer(index).type).split(".")[-1]
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def _register_plugin(trt: Any, plugin: str | os.PathLike | None) -> dict[str, Any]:
    """Make CICMAugment known to the plugin registry: the C++ library when given, else the Python plugin."""
    from .tensorrt_plugin import PluginRegistrationError, activate_plugin

    if plugin is not None and not Path(plugin).is_file():
        raise EngineBuildError(f"plugin library {plugin} does not exist; build it with CMake in runtimes/plugin "
                               "(see runtimes/plugin/README.md)")
    try:
        activate_plugin(trt, plugin)
    except PluginRegistrationError as exc:
        raise EngineBuildError(str(exc)) from None
    if plugin is not None:
        path = Path(plugin)
        return {"kind": "library", "path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"kind": "python", "path": None, "sha256": None}
