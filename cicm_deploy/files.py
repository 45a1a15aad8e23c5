"""Writing through a temporary name, with the modes a plain write gives; what a path's suffix says it is.

``tempfile.mkstemp`` creates files 0600 and ``mkdtemp`` folders 0700, whatever the umask: a
checkpoint or bundle renamed into place from one would be unreadable to other users (a Triton or
service account, a copy on a Jetson made as another user). ``as_if_created`` gives it the mode a
plain ``open()`` or ``mkdir()`` would have given it under the current umask.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable

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


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *, durable: bool = False) -> Path:
    """``write(handle)`` into a temporary file beside ``path``, then rename: ``path`` is whole or untouched,
    and no temporary file is left behind (an error, Ctrl-C). ``durable`` also fsyncs the file and its folder.

    A failed write (disk full, read-only folder) raises an ``OSError`` that names ``path``, not the
    temporary file, with the system's reason (also where ``write`` wraps it, as torch.save does).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        as_if_created(tmp)  # mkstemp's 0600 would keep other users (a server account) out
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = exc if isinstance(exc, OSError) else exc.__context__
        if isinstance(exc, (OSError, RuntimeError)) and isinstance(cause, OSError) and cause.errno:
            raise OSError(cause.errno, cause.strerror, str(path)) from None
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_in_the_way(path: str | os.PathLike, *, itself: bool = False) -> Path | None:
    """The first existing file (not a folder) among ``path``'s parents (and ``path`` itself with
    ``itself``): what stands where a folder is needed, for errors that name it."""
    path = Path(path)
    candidates = ((path,) if itself else ()) + tuple(path.parents)
    return next((p for p in candidates if p.exists() and not p.is_dir()), None)


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
