"""Serving on Triton Inference Server: PyTriton around the ``Inpainter``, and stock model repositories.

Two ways to serve, both on NVIDIA's server rather than a home-made one:

* ``serve``: PyTriton (``nvidia-pytriton``, whose wheel carries a real ``tritonserver``) with the
  ``Inpainter`` inside. Clients send what a camera gives, uint8 frames of any size and a uint8
  mask (255 = hole); padding to the stride, batching of same-sized requests (Triton's dynamic
  batcher) and cropping back happen in the server. HTTP, gRPC and the Prometheus metrics endpoint
  come from Triton itself.
* ``write_model_repository``: a model repository for a stock ``tritonserver`` (NGC container,
  Jetson's Triton release): the bundle's ONNX for Triton's onnxruntime backend, and an engine
  built on the target for its TensorRT backend, with the CICMAugment plugin library to preload.
  These models take the graph's own tensors (float32 NCHW, H and W multiples of the stride).

Model names, tensor names and the mask convention are the bundle's (DESIGN §3).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cicm_deploy.files import listing

from .base import BackendUnavailableError

MODEL_NAME = "cicm_inpaint"  # the PyTriton model (uint8 frames in and out)
ONNX_MODEL_NAME = "cicm_inpaint_onnx"  # stock repository: Triton's onnxruntime backend
TRT_MODEL_NAME = "cicm_inpaint_trt"  # stock repository: Triton's TensorRT backend
PLUGIN_DIR = "plugins"

_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                 "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}


class TritonError(ValueError):
    """A model repository or server that cannot be made from what was given."""


# -- PyTriton --------------------------------------------------------------------------------------

def libpython_first(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Put the running interpreter's ``libpython`` directory first on ``LD_LIBRARY_PATH``.

    Triton's Python backend stub is linked against ``libpython3.X.so``; without this the loader
    may find the system's copy instead of the one this interpreter was built with, and the stub
    fails while initialising the model (``'_thread.RLock' object has no attribute
    '_recursion_count'``, measured with the distribution Python 3.11 beside a separately built
    3.11). Returns the directory put first, or None where the interpreter has no shared library.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not Path(libdir).is_dir():
        return None
    rest = [p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *rest])
    return libdir


@dataclass(frozen=True)
class ServeConfig:
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8  # largest batch Triton's dynamic batcher forms from same-sized requests
    instances: int = 1  # model instances, each running on its own runtime (session or engine)
    queue_delay_us: int = 2000  # how long a request may wait for others to batch with
    exit_timeout_s: int = 10  # on a stop, how long Triton waits for requests in flight
    model_name: str = MODEL_NAME

    def __post_init__(self) -> None:
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise TritonError(f"{name.replace('_', ' ')} {port} is not a TCP port (1..65535)")
        if len({self.http_port, self.grpc_port, self.metrics_port}) != 3:
            raise TritonError(f"the HTTP, gRPC and metrics ports must differ, got {self.http_port}, "
                              f"{self.grpc_port}, {self.metrics_port}")
        if self.max_batch < 1 or self.instances < 1:
            raise TritonError(f"--max-batch and --instances must be at least 1, got {self.max_batch}, "
                              f"{self.instances}")
        if self.queue_delay_us < 0:
            raise TritonError(f"the queue delay must not be negative, got {self.queue_delay_us}")
        if self.exit_timeout_s < 0:
            raise TritonError(f"the exit timeout must not be negative, got {self.exit_timeout_s}")


def check_ports_free(config: ServeConfig) -> None:
    """Fail early, with the port named, where another process listens on one of the ports."""
    import socket

    for what, port in (("HTTP", config.http_port), ("gRPC", config.grpc_port), ("metrics", config.metrics_port)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as exc:
                raise TritonError(f"the {what} port {port} is not free ({exc.strerror}); choose other ports with "
                                  "--port (HTTP; gRPC and metrics follow) or --grpc-port/--metrics-port") from None


def import_pytriton() -> None:
    """Check that PyTriton imports, with the install command where it does not."""
    try:
        import pytriton.triton  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"serving needs PyTriton, which is not installed here ({exc}); install it with: "
            "pip install 'cicm-deploy[serve]'") from None


START_ATTEMPTS = 3  # starts of the server when its model instances lose PyTriton's start-up race


def instance_handshake_race(message: str) -> bool:
    """Whether a failed start is PyTriton's start-up race between model instances.

    With several instances, every instance after the first asks the first one for its settings
    over a Unix socket (``get_config_from_handshake_server``), polling only for the socket file:
    the file appears when the first instance binds it, a moment before it listens, and a loaded
    machine can stretch that moment (seen as ``ConnectionRefusedError``, once in four CI runs) or
    delay the file past PyTriton's one second (``Timeout occurred while waiting for config
    file``). Either way nothing is wrong with the model, and a new start succeeds.
    """
    return "get_config_from_handshake_server" in message or "waiting for config file" in message


def failure_summary(exc: BaseException) -> str:
    """One line for a failed start: the message's first line and, where the message carries a
    server-side traceback (PyTriton passes the model's on), that traceback's last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    raised = [line for line in lines[1:] if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b:?", line)]
    first = lines[0].replace("Traceback (most recent call last):", "").rstrip(" :")
    return first + (f" ... {raised[-1]}" if raised and raised[-1] != lines[0] else "")


def infer_function(inpainter: Any) -> Callable[..., dict[str, np.ndarray]]:
    """The PyTriton callable: a batch of uint8 frames [B, H, W, 3] and masks [B, H, W] -> frames."""
    from pytriton.decorators import batch
    from pytriton.exceptions import PyTritonBadParameterError

    @batch
    def infer(image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        try:
            results = inpainter.batch(list(image), list(mask))
        except ValueError as exc:  # the request's fault: its message goes back to the client
            raise PyTritonBadParameterError(f"bad request: {exc}") from None
        return {"inpainted": np.stack(results)}

    return infer


def bind_inpainter(triton: Any, inpainters: Sequence[Any], config: ServeConfig) -> None:
    """Bind one model with one instance per entry of ``inpainters`` (the same ``Inpainter`` with
    ``workers`` = instances may appear several times: each call takes a free runtime of its pool)."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    triton.bind(
        model_name=config.model_name,
        infer_func=[infer_function(i) for i in inpainters],
        inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3)),
                Tensor(name="mask", dtype=np.uint8, shape=(-1, -1))],
        outputs=[Tensor(name="inpainted", dtype=np.uint8, shape=(-1, -1, 3))],
        config=ModelConfig(max_batch_size=config.max_batch,
                           batcher=DynamicBatcher(max_queue_delay_microseconds=config.queue_delay_us)),
        strict=True,
    )


def triton_config(config: ServeConfig, log_verbose: int = 0, log_file: Path | None = None) -> Any:
    """PyTriton's server settings; ``log_file``: where tritonserver writes its log instead of the console."""
    from pytriton.triton import TritonConfig

    from cicm_deploy.environment import driver_cuda_version

    # Without an NVIDIA driver, tritonserver's GPU metrics (DCGM) print "Error: Failed to initialize
    # NVML" on the console at start: a false alarm on a CPU server, so they are off there.
    return TritonConfig(http_port=config.http_port, grpc_port=config.grpc_port, metrics_port=config.metrics_port,
                        log_verbose=log_verbose, log_file=log_file, exit_timeout_secs=config.exit_timeout_s,
                        allow_gpu_metrics=driver_cuda_version() is not None)


# -- stock model repositories ----------------------------------------------------------------------

def _dims(shape: Sequence[Any], batched: bool) -> list[int]:
    dims = shape[1:] if batched else shape
    return [int(d) if isinstance(d, int) and d > 0 else -1 for d in dims]


def _tensor_entries(specs: Sequence[dict[str, Any]], batched: bool) -> list[str]:
    entries = []
    for spec in specs:
        dtype = _TRITON_TYPES.get(spec["dtype"])
        if dtype is None:
            raise TritonError(f"tensor {spec['name']!r} has dtype {spec['dtype']}, which Triton's config cannot name")
        dims = ", ".join(str(d) for d in _dims(spec["shape"], batched))
        entries.append(f'  {{\n    name: "{spec["name"]}"\n    data_type: {dtype}\n    dims: [ {dims} ]\n  }}')
    return entries


def model_config_text(name: str, platform: str, inputs: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]],
                      max_batch: int, instances: int, kind: str, queue_delay_us: int = 2000) -> str:
    """``config.pbtxt`` in protobuf text format (Triton's ``ModelConfig`` message)."""
    batched = max_batch > 0
    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch}",
             "input [", ",\n".join(_tensor_entries(inputs, batched)), "]",
             "output [", ",\n".join(_tensor_entries(outputs, batched)), "]"]
    if batched:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {queue_delay_us}", "}"]
    lines += ["instance_group [", f"  {{\n    count: {instances}\n    kind: {kind}\n  }}", "]"]
    return "\n".join(lines) + "\n"


def _batched(specs: Sequence[dict[str, Any]]) -> bool:
    """True when every tensor's first dimension is dynamic (Triton then owns the batch)."""
    return all(not isinstance(s["shape"][0], int) or s["shape"][0] <= 0 for s in specs)


def write_model_repository(bundle_path: str | os.PathLike, out: str | os.PathLike, *, engine: str | os.PathLike | None = None,
                           plugin: str | os.PathLike | None = None, max_batch: int = 8, instances: int = 1,
                           onnx_kind: str = "KIND_CPU", queue_delay_us: int = 2000, force: bool = False,
                           on_note: Callable[[str], None] | None = None) -> list[Path]:
    """Write a model repository for a stock Triton server; returns the ``config.pbtxt`` files written.

    The onnxruntime model is written for an ``onnx``-routed bundle; the TensorRT model when an
    ``engine`` (built on the target with ``cicm-deploy build``) is given, with ``plugin`` copied to
    ``REPO/plugins/`` when the engine needs it. A README in the repository gives the server command.
    Where a model's batching differs from ``max_batch`` (a bundle exported with a fixed batch, an
    engine whose profile stops lower), ``on_note`` hears why, and the README says it too.
    """
    notes: list[str] = []
    from .bundle import open_bundle

    bundle = open_bundle(bundle_path)
    out = Path(out).resolve()  # "." has no name to stage beside
    if max_batch < 1 or instances < 1:
        raise TritonError(f"--max-batch and --instances must be at least 1, got {max_batch}, {instances}")
    if onnx_kind not in ("KIND_CPU", "KIND_GPU"):
        raise TritonError(f"the onnxruntime instance kind must be KIND_CPU or KIND_GPU, got {onnx_kind}")
    if out == Path.cwd() or out in Path.cwd().parents:  # the repository replaces OUT as a whole
        raise TritonError(f"{out} holds the current directory, which the repository would replace; choose "
                          "another -o (e.g. -o model_repository)")
    for what, path in (("bundle", bundle.path), ("engine", engine), ("plugin library", plugin)):
        if path is not None and (Path(path).resolve().is_relative_to(out) or out.is_relative_to(Path(path).resolve())):
            raise TritonError(f"-o {out} and the {what} {path} overlap: the repository replaces OUT as a whole; "
                              "choose a separate -o (e.g. -o model_repository)")
    if out.exists() and not out.is_dir():
        raise TritonError(f"{out} is a file, not a model repository; choose another -o")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise TritonError(f"{out} exists and is not empty; choose another -o or pass --force to replace it")
        _check_replaceable(out)
    sidecar = _engine_sidecar(engine, bundle) if engine is not None else None
    if bundle.routing != "onnx" and sidecar is None:
        raise TritonError(
            f"bundle {bundle.path} uses plugin routing: Triton's onnxruntime backend cannot run its CICMAugment "
            "node (the reference op is Python); export with --routing onnx for onnxruntime, or pass --engine "
            "with an engine built on the target for Triton's TensorRT backend")
    needs_plugin = bool(sidecar and sidecar.get("plugin"))
    if needs_plugin and plugin is None:
        raise TritonError(f"engine {engine} contains the CICMAugment plugin: pass --plugin with the library it was "
                          "built with, so the server can preload it")
    if plugin is not None and not needs_plugin:
        what = (f"engine {engine} has no CICMAugment plugin layer (standard-op routing)" if sidecar is not None else
                "without --engine the repository serves the bundle with Triton's onnxruntime backend, which loads "
                "no TensorRT plugin")
        raise TritonError(f"--plugin is for an engine that contains the CICMAugment plugin; {what}: drop --plugin")
    if plugin is not None and not Path(plugin).is_file():
        raise TritonError(f"plugin library {plugin} does not exist")

    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    written: list[Path] = []
    try:
        staging.mkdir(parents=True)
        outputs = bundle.manifest["outputs"]
        if bundle.routing == "onnx":
            inputs = bundle.manifest["inputs"]
            batch = max_batch if _batched([*inputs, *outputs]) else 0
            if not batch:
                fixed = next(spec["shape"] for spec in inputs if spec["name"] == "image")
                notes.append(f"bundle {bundle.path.name} was exported with a fixed batch, so {ONNX_MODEL_NAME} gets "
                             f"max_batch_size 0: no dynamic batching, and every request is exactly image "
                             f"{_shape_text(fixed)} (--max-batch does not apply; export without --batch to batch)")
            version = staging / ONNX_MODEL_NAME / "1"
            version.mkdir(parents=True)
            shutil.copyfile(bundle.model_path, version / "model.onnx")
            (staging / ONNX_MODEL_NAME / "config.pbtxt").write_text(model_config_text(
                ONNX_MODEL_NAME, "onnxruntime_onnx", inputs, outputs, batch, instances, onnx_kind, queue_delay_us))
            written.append(out / ONNX_MODEL_NAME / "config.pbtxt")
        if sidecar is not None:
            profile_max = int(sidecar["profile"]["max"][0])
            batch = min(max_batch, profile_max)
            if profile_max < max_batch:
                notes.append(f"engine {Path(engine).name} was built for batches up to {profile_max}, so "
                             f"{TRT_MODEL_NAME} gets max_batch_size {profile_max}, not --max-batch {max_batch} "
                             "(rebuild with a larger --max-shape to batch more)")
            version = staging / TRT_MODEL_NAME / "1"
            version.mkdir(parents=True)
            shutil.copyfile(engine, version / "model.plan")
            (staging / TRT_MODEL_NAME / "config.pbtxt").write_text(model_config_text(
                TRT_MODEL_NAME, "tensorrt_plan", sidecar["inputs"], sidecar["outputs"], batch, instances, "KIND_GPU",
                queue_delay_us))
            written.append(out / TRT_MODEL_NAME / "config.pbtxt")
        if plugin is not None:
            (staging / PLUGIN_DIR).mkdir()
            shutil.copyfile(plugin, staging / PLUGIN_DIR / Path(plugin).name)
        (staging / "README.md").write_text(_repository_readme(out, bundle, sidecar, plugin, notes))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for note in notes:
        if on_note is not None:
            on_note(note)
    return written


def _check_replaceable(out: Path) -> None:
    """--force replaces a model repository (README.md, plugins/, model folders with a config.pbtxt), nothing else."""
    strangers = sorted(entry.name for entry in out.iterdir()
                       if not (entry.name == "README.md" and entry.is_file()) and not (entry.name == PLUGIN_DIR and entry.is_dir())
                       and not (entry.is_dir() and (entry / "config.pbtxt").is_file()))
    if strangers:
        raise TritonError(f"{out} is not a model repository ({listing(strangers)} would be deleted): --force replaces only an "
                          "earlier repository; choose another -o (e.g. a new folder)")


def _engine_sidecar(engine: str | os.PathLike, bundle: Any) -> dict[str, Any]:
    from .tensorrt_build import SIDECAR_SUFFIX

    engine = Path(engine)
    if not engine.is_file():
        raise TritonError(f"engine {engine} does not exist; build it on the target with "
                          f"`cicm-deploy build {bundle.path} -o {engine}`")
    side = engine.with_name(engine.name + SIDECAR_SUFFIX)
    try:
        sidecar = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TritonError(f"engine {engine} has no readable sidecar {side.name} ({exc}); engines for the repository "
                          "come from `cicm-deploy build`") from None
    if sidecar.get("bundle_files") != bundle.manifest["files"]:
        raise TritonError(f"engine {engine} was built from another bundle than {bundle.path} (file hashes differ); "
                          "rebuild it from this bundle")
    if sidecar.get("tensorrt_module") == "tensorrt_rtx":
        raise TritonError(f"engine {engine} was built with TensorRT for RTX, which Triton's TensorRT backend does "
                          "not load; build it with TensorRT on the target")
    return sidecar


_AXIS_NAMES = {"batch": "B", "height": "H", "width": "W", "route_height": "h", "route_width": "w"}


def _shape_text(shape: Sequence[Any]) -> str:
    """A manifest shape as the README writes it: fixed sizes as numbers, dynamic axes as letters."""
    return "[" + ", ".join(str(d) if isinstance(d, int) else _AXIS_NAMES.get(str(d), str(d)) for d in shape) + "]"


def _repository_readme(out: Path, bundle: Any, sidecar: dict[str, Any] | None, plugin: Any,
                       notes: Sequence[str] = ()) -> str:
    manifest = bundle.manifest
    tensors = {spec["name"]: _shape_text(spec["shape"]) for spec in [*manifest["inputs"], *manifest["outputs"]]}
    dynamic = any(not isinstance(d, int) for d in manifest["inputs"][0]["shape"][2:])
    lines = [f"# Triton model repository for {bundle.path.name}", "",
             f"Written by `cicm-deploy triton-repo` from bundle `{bundle.path}` ({bundle.precision}, "
             f"{bundle.routing} routing, stride {bundle.stride}).", "",
             f"Inputs: `image` float32 {tensors['image']} in [0, 1], `mask` float32 {tensors['mask']} (1 = hole)"
             + (f"; H and W multiples of {bundle.stride}" if dynamic else "")
             + f". Output `inpainted` float32 {tensors['inpainted']}"
             + (f"; `route` int32 {tensors['route']} is the bottleneck routing." if "route" in tensors else "."),
             ""]
    if notes:
        lines += ["Batching:", "", *[f"- {note}." for note in notes], ""]
    if sidecar is not None:
        lines += [f"The engine was built with {sidecar['tensorrt_module']} {sidecar['tensorrt_version']} on "
                  f"{(sidecar.get('gpu') or {}).get('name', 'an unknown GPU')}: the server must use the same "
                  "TensorRT version and GPU model.", ""]
    repo = f"$PWD/{out.name}"  # the commands run from the folder that holds the repository, wherever it is copied
    lines += [f"Start a stock server from the folder that holds `{out.name}/`:", ""]
    if plugin is not None:
        lib = f"{repo}/{PLUGIN_DIR}/{Path(plugin).name}"
        lines += ["```", f"LD_PRELOAD={lib} tritonserver --model-repository={repo}", "```", "",
                  "or, preloading the CICMAugment plugin through the TensorRT backend instead:", "",
                  "```", f'tritonserver --model-repository={repo} --backend-config=tensorrt,plugins="{lib}"', "```"]
    else:
        lines += ["```", f"tritonserver --model-repository={repo}", "```"]
    return "\n".join(lines) + "\n"
