"""File modes for what is written through a temporary name; what a path's suffix says it is.

``tempfile.mkstemp`` creates files 0600 and ``mkdtemp`` folders 0700, whatever the umask: a
checkpoint or bundle renamed into place from one would be unreadable to other users (a Triton or
service account, a copy on a Jetson made as another user). ``as_if_created`` gives it the mode a
plain ``open()`` or ``mkdir()`` would have given it under the current umask.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_LOCK = threading.Lock()


def current_umask() -> int:
    with _LOCK:  # the only way to read the umask is to set it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def as_if_created(path: str | os.PathLike) -> None:
    """chmod ``path`` (a file, or a folder and everything in it) to the umask's default modes."""
    path, mask = Path(path), current_umask()
    if path.is_dir():
        for folder, dirs, files in os.walk(path):
            os.chmod(folder, 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


CHECKPOINT_KIND = "a PyTorch checkpoint"
ENGINE_KIND = "a TensorRT engine"
# What a file's suffix says it is: a path given in the wrong place is named for what it is.
FILE_KINDS = {".pt": CHECKPOINT_KIND, ".pth": CHECKPOINT_KIND, ".onnx": "an ONNX model", ".engine": ENGINE_KIND,
              ".plan": ENGINE_KIND, ".trt": ENGINE_KIND, ".npz": "a numpy archive", ".json": "a JSON file"}


def file_kind(path: str | os.PathLike) -> str | None:
    """``FILE_KINDS``' word for ``path``'s suffix, "an image" for one Pillow writes, else None."""
    suffix = Path(path).suffix.lower()
    if suffix in FILE_KINDS:
        return FILE_KINDS[suffix]
    from .images import SAVE_FORMATS

    return "an image" if suffix in SAVE_FORMATS else None


def bundle_of(path: str | os.PathLike) -> Path | None:
    """The bundle directory a file sits in (beside its manifest.json), if any."""
    parent = Path(path).parent
    return parent if (parent / "manifest.json").is_file() else None


def listing(names: list[str], shown: int = 3) -> str:
    """'a, b, c and 4 more': the first few of ``names`` for a one-line message."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
