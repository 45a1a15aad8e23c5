"""One place that turns what the user points at into a runtime. No torch.

A directory is a bundle (onnxruntime); a file is a TensorRT engine built by ``cicm-deploy
build`` (its sidecar names the bundle, which ``bundle`` overrides). An ONNX model, checkpoint or
golden archive given instead is refused with a line saying what to pass.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

from cicm_deploy import CICMWarning

from .base import Runtime


ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
NOT_ENGINES = {".onnx": "an ONNX model", ".pt": "a PyTorch checkpoint", ".pth": "a PyTorch checkpoint",
               ".npz": "a numpy archive", ".json": "a JSON file"}


def _holder(path: Path) -> str:
    """' (DIR holds one)' when the file sits in a bundle directory."""
    return f" ({path.parent} holds one)" if (path.parent / "manifest.json").is_file() else ""


def bundle_file_message(path: Path, kind: str) -> str:
    """The one line for a file given where a bundle directory (or an engine) was expected."""
    return (f"{path} is a file, {kind}: pass the bundle directory `cicm-deploy export` writes{_holder(path)}, or a "
            "TensorRT engine built by `cicm-deploy build` (it comes with a .json sidecar)")


def _bundle_routing(path: Path) -> str | None:
    import json

    try:
        return json.loads((path / "manifest.json").read_text()).get("routing")
    except (OSError, ValueError, AttributeError):
        return None


def open_runtime(target: str | os.PathLike, *, bundle: str | os.PathLike | None = None,
                 plugin: str | os.PathLike | None = None, providers: Sequence[str] | None = None) -> Runtime:
    target = Path(target)
    if target.is_dir():
        from .onnxruntime import OnnxRuntimeBackend

        if plugin is not None:
            how = (" (its CICMAugment node runs the reference op)" if _bundle_routing(target) == "plugin" else
                   " (standard-op routing: no custom op at all)")
            warnings.warn(f"the plugin library {plugin} is for TensorRT engines; onnxruntime runs the bundle {target}"
                          f"{how}: the library is not used", CICMWarning, stacklevel=2)
        return OnnxRuntimeBackend(target, providers=providers or None)
    engine_like = target.suffix.lower() in ENGINE_SUFFIXES or Path(f"{target}.json").is_file()
    if not target.exists() and not engine_like:
        from .bundle import BundleError

        raise BundleError(f"{target} does not exist: pass a bundle directory (`cicm-deploy export CKPT -o {target}` "
                          "writes one) or a TensorRT engine (`cicm-deploy build BUNDLE -o MODEL.engine`)")
    if target.is_file() and not engine_like:
        from .bundle import BundleError

        raise BundleError(bundle_file_message(target, NOT_ENGINES.get(target.suffix.lower(), "not a bundle directory")))
    from .tensorrt import TensorRTBackend

    if providers:
        warnings.warn(f"execution providers ({', '.join(providers)}) choose how onnxruntime runs a bundle; "
                      f"{target} is a TensorRT engine: they are not used", CICMWarning, stacklevel=2)
    return TensorRTBackend(target, bundle=bundle, plugin=plugin)
