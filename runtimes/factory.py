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
from cicm_deploy.files import ENGINE_KIND, FILE_KINDS, bundle_of, file_kind

from .base import Runtime


ENGINE_SUFFIXES = tuple(suffix for suffix, kind in FILE_KINDS.items() if kind == ENGINE_KIND)


def bundle_file_message(path: Path) -> str:
    """The one line for a file given where a bundle directory (or an engine) was expected."""
    kind, bundle = file_kind(path) or "not a bundle directory", bundle_of(path)
    holder = f" ({bundle} holds one)" if bundle else ""
    return (f"{path} is a file, {kind}: pass the bundle directory `cicm-deploy export` writes{holder}, "
            "or a TensorRT engine built by `cicm-deploy build` (it comes with a .json sidecar)")


def open_runtime(target: str | os.PathLike, *, bundle: str | os.PathLike | None = None,
                 plugin: str | os.PathLike | None = None, providers: Sequence[str] | None = None) -> Runtime:
    target = Path(target)
    if target.is_dir():
        from .onnxruntime import OnnxRuntimeBackend

        runtime = OnnxRuntimeBackend(target, providers=providers or None)
        if plugin is not None:
            how = (" (its CICMAugment node runs the reference op)" if runtime.bundle.routing == "plugin" else
                   " (standard-op routing: no custom op at all)")
            warnings.warn(f"the plugin library {plugin} is for TensorRT engines; onnxruntime runs the bundle {target}"
                          f"{how}: the library is not used", CICMWarning, stacklevel=2)
        return runtime
    engine_like = target.suffix.lower() in ENGINE_SUFFIXES or Path(f"{target}.json").is_file()
    if not target.exists() and not engine_like:
        from .bundle import BundleError

        raise BundleError(f"{target} does not exist: pass a bundle directory (`cicm-deploy export CKPT -o {target}` "
                          "writes one) or a TensorRT engine (`cicm-deploy build BUNDLE -o MODEL.engine`)")
    if target.is_file() and not engine_like:
        from .bundle import BundleError

        raise BundleError(bundle_file_message(target))
    from .tensorrt import TensorRTBackend

    if providers:
        warnings.warn(f"execution providers ({', '.join(providers)}) choose how onnxruntime runs a bundle; "
                      f"{target} is a TensorRT engine: they are not used", CICMWarning, stacklevel=2)
    return TensorRTBackend(target, bundle=bundle, plugin=plugin)
