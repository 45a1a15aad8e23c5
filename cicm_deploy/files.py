"""File modes for what is written through a temporary name.

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
