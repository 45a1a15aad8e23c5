"""onnxruntime backend. No torch.

Execution providers are taken in the order TensorRT EP, CUDA EP, CPU, keeping those this
onnxruntime build offers (``providers=`` overrides). A plugin-routed bundle (CICMAugment node)
runs through the numpy reference op, registered with onnxruntime-extensions; the TensorRT EP is
left out for such graphs, since it would need the TensorRT plugin library instead.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Sequence

import numpy as np

from .base import BackendUnavailableError, InferenceError, Runtime
from .bundle import Bundle, BundleError, open_bundle

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int32)": "int32",
             "tensor(int64)": "int64"}

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _import_onnxruntime() -> Any:
    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailableError("onnxruntime is not installed; pip install 'cicm-deploy[cpu]' "
                                      "(or 'cicm-deploy[gpu]' on a CUDA machine)")
    import onnxruntime

    return onnxruntime


def one_line(exc: BaseException, limit: int = 800) -> str:
    """onnxruntime's message on one line, whole: its first line often only says which input failed,
    the next ones say how ("index: 0 Got: 2 Expected: 1")."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def choose_providers(available: Sequence[str], needs_custom_op: bool) -> list[str]:
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    if needs_custom_op:
        chosen = [p for p in chosen if p != "TensorrtExecutionProvider"]
    return chosen or ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Runtime):
    backend = "onnxruntime"

    def __init__(self, bundle: Bundle | str | os.PathLike, *, providers: Sequence[str] | None = None,
                 threads: int | None = None, session_options: Any = None) -> None:
        super().__init__(bundle if isinstance(bundle, Bundle) else open_bundle(bundle))
        self.requested_providers = list(providers) if providers else None
        self.threads = threads
        self.session_options = session_options
        self.session: Any = None

    @property
    def needs_custom_op(self) -> bool:
        return bool(self.bundle.custom_ops)

    def _model_bytes(self, options: Any) -> bytes:
        if not self.needs_custom_op:
            return self.bundle.model_path.read_bytes()
        missing = [m for m in ("onnx", "onnxruntime_extensions") if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendUnavailableError(
                f"this bundle uses the custom op CICMAugment (--routing plugin); running it with onnxruntime needs "
                f"the reference op, which needs {' and '.join(missing)}: pip install 'cicm-deploy[reference]'. "
                "Or export with --routing onnx, or run it with TensorRT and the plugin")
        import onnx

        from .reference_op import register_with_onnxruntime, retarget_custom_domain

        options.register_custom_ops_library(register_with_onnxruntime())
        proto = onnx.load(str(self.bundle.model_path))
        retarget_custom_domain(proto)
        return proto.SerializeToString()

    def _load(self) -> None:
        ort = _import_onnxruntime()
        options = self.session_options or ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        available = ort.get_available_providers()
        unknown = [p for p in self.requested_providers or [] if p not in available]
        if unknown:
            raise BackendUnavailableError(
                f"execution provider {', '.join(unknown)} is not available in this onnxruntime {ort.__version__} "
                f"(available here: {', '.join(available)}); CUDA and TensorRT providers come with onnxruntime-gpu")
        providers = self.requested_providers or choose_providers(available, self.needs_custom_op)
        try:
            self.session = ort.InferenceSession(self._model_bytes(options), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BackendUnavailableError(f"onnxruntime could not load {self.bundle.model_path}: "
                                          f"{one_line(exc)}") from None
        self._check_graph_matches_manifest()
        running = self.session.get_providers()
        if self.requested_providers and running[0] != self.requested_providers[0]:
            self.session = None  # asked for explicitly: falling back would report the wrong device
            raise BackendUnavailableError(
                f"onnxruntime could not start {self.requested_providers[0]} here and fell back to {running[0]} "
                "(its warnings above say why); leave out --provider to use what this machine has")

    def _check_graph_matches_manifest(self) -> None:
        """The graph's inputs and outputs (names, types, shapes) are the manifest's: a model.onnx swapped
        in with a re-computed hash, or a hand-edited manifest, is refused before it runs. Inputs match
        exactly (which dimensions are fixed, and to what; dynamic ones show as "?"); an output's
        dimension may be one the graph knows and the manifest leaves open (shape inference), but two
        fixed values must agree."""
        def dims(shape: Any) -> list[int | str]:
            return [d if isinstance(d, int) else "?" for d in shape]

        def agree(kind: str, found: list[Any], listed: list[Any]) -> bool:
            if kind == "inputs" or len(found) != len(listed):
                return found == listed
            return all(f[:2] == m[:2] and len(f[2]) == len(m[2])
                       and all(a == b or "?" in (a, b) for a, b in zip(f[2], m[2])) for f, m in zip(found, listed))

        manifest = self.bundle.manifest
        for kind, graph in (("inputs", self.session.get_inputs()), ("outputs", self.session.get_outputs())):
            found = [(v.name, ORT_TYPES.get(v.type, v.type), dims(v.shape)) for v in graph]
            listed = [(e["name"], e["dtype"], dims(e["shape"])) for e in manifest[kind]]
            if not agree(kind, found, listed):
                self.session = None
                raise BundleError(f"{self.bundle.model_path} has {kind} {found} (name, dtype, shape), its "
                                  f"manifest lists {listed}; re-export the bundle")

    def _close(self) -> None:
        self.session = None

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        try:
            return dict(zip(names, self.session.run(names, feeds)))
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime's own Fail/InvalidArgument types, after check_feeds passed
            shape = "x".join(map(str, feeds["image"].shape))
            raise InferenceError(f"onnxruntime could not run {self.bundle.model_path} on a {shape} image: "
                                 f"{one_line(exc)}") from None

    def describe(self) -> dict[str, Any]:
        ort = _import_onnxruntime()
        self.load()
        return {"backend": self.backend, "device": self.session.get_providers()[0],
                "providers": self.session.get_providers(), "precision": self.bundle.precision,
                "routing": self.bundle.routing, "bundle": str(self.bundle.path),
                "versions": {"onnxruntime": ort.__version__}}
