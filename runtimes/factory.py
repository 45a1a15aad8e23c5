"""One place that turns what the user points at into a runtime. No torch.

A directory is a bundle (onnxruntime); a file is a TensorRT engine built by ``cicm-deploy
build`` (its sidecar names the bundle, which ``bundle`` overrides).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .base import Runtime


def open_runtime(target: str | os.PathLike, *, bundle: str | os.PathLike | None = None,
                 plugin: str | os.PathLike | None = None, providers: Sequence[str] | None = None) -> Runtime:
    target = Path(target)
    if target.is_dir():
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(target, providers=providers or None)
    from .tensorrt import TensorRTBackend

    return TensorRTBackend(target, bundle=bundle, plugin=plugin)
