"""One place that turns what the user points at into a runtime. No torch.

A directory is a bundle (onnxruntime); a file is a TensorRT engine built by ``cicm-deploy
build`` (its sidecar names the bundle, which ``bundle`` overrides). An ONNX model, checkpoint or
golden archive given instead is refused with a line saying what to pass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .base import Runtime


NOT_ENGINES = {".onnx": "an ONNX model", ".pt": "a PyTorch checkpoint", ".pth": "a PyTorch checkpoint",
               ".npz": "a numpy archive", ".json": "a JSON file"}


def _holder(path: Path) -> str:
    """' (DIR holds one)' when the file sits in a bundle directory."""
    return f" ({path.parent} holds one)" if (path.parent / "manifest.json").is_file() else ""


def open_runtime(target: str | os.PathLike, *, bundle: str | os.PathLike | None = None,
                 plugin: str | os.PathLike | None = None, providers: Sequence[str] | None = None) -> Runtime:
    target = Path(target)
    if target.is_file() and target.suffix.lower() in NOT_ENGINES:
        from .bundle import BundleError

        raise BundleError(f"{target} is a file, {NOT_ENGINES[target.suffix.lower()]}: pass the bundle directory "
                          f"`cicm-deploy export` writes{_holder(target)}, or a TensorRT engine built by "
                          "`cicm-deploy build`")
    if target.is_dir():
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(target, providers=providers or None)
    from .tensorrt import TensorRTBackend

    return TensorRTBackend(target, bundle=bundle, plugin=plugin)
