"""cicm-deploy: train, export and deploy CICM inpainting models.

Importing this package loads no heavy library: torch, onnxruntime and TensorRT are imported by
the modules that need them, so the runtime side runs on machines without torch.
"""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("cicm-deploy")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["CICMWarning", "Inpainter", "__version__"]


class CICMWarning(UserWarning):
    """A warning about the user's input (a 0/1 mask, an unreadable training image); the command line
    prints it as one line."""


def __getattr__(name: str):  # lazy: `import cicm_deploy` stays light
    if name == "Inpainter":
        from .inpainter import Inpainter

        return Inpainter
    raise AttributeError(f"module 'cicm_deploy' has no attribute {name!r}")
