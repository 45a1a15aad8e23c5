"""What every command shares: the user-error type, turning library errors into it, the torch check.

No torch import here: the runtime commands use it on machines without torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from cicm_deploy.files import file_in_the_way

MASK_HELP = "Mask convention: white (255) = hole, black = keep; --mask-invert flips it."


class UserError(click.ClickException):
    """A mistake in what the user gave: one line, exit status 2, no traceback."""

    exit_code = 2


def user_errors(func: Callable[[], Any]) -> Any:
    """Run ``func``, turning the library's input errors into ``UserError``s."""
    from cicm_deploy.config import ConfigError
    from cicm_deploy.images import ImageError
    from cicm_deploy.runtimes.base import BackendUnavailableError, RuntimeInputError
    from cicm_deploy.runtimes.bundle import BundleError
    from cicm_deploy.runtimes.triton import TritonError

    errors: tuple[type[BaseException], ...] = (ImageError, ConfigError, BundleError, RuntimeInputError,
                                               BackendUnavailableError, TritonError)
    try:
        from cicm_deploy.checkpoint import CheckpointError  # needs torch
        errors += (CheckpointError,)
    except ImportError:
        pass
    try:
        from cicm_deploy.export.bundle import ExportError  # needs torch and onnx
        errors += (ExportError,)
    except ImportError:
        pass
    try:
        from cicm_deploy.train.data import DataError
        errors += (DataError,)
    except ImportError:
        pass
    from cicm_deploy.runtimes.base import InferenceError

    try:
        return func()
    except errors as exc:
        raise UserError(str(exc)) from None
    except InferenceError as exc:  # not the user's mistake: exit 1, still one line
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # a file that cannot be read or written: the system's words, one line
        if exc.filename is None:
            raise
        blocker = _file_in_the_way(exc)
        if blocker is not None:  # mkdir's "File exists" / "Not a directory" would not say which
            raise UserError(f"{exc.filename}: {blocker} is a file, where a folder is needed; choose another "
                            "path") from None
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        raise UserError(f"{where}: {exc.strerror or exc}") from None


def _file_in_the_way(exc: OSError) -> Path | None:
    """The file standing where ``exc``'s path needs a folder (a parent, or the path itself for a mkdir)."""
    if not isinstance(exc, (FileExistsError, NotADirectoryError)):
        return None
    return file_in_the_way(os.fsdecode(exc.filename), itself=isinstance(exc, FileExistsError))


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (a service manager, ``kill``, a CI timeout) raises SystemExit(143) in the main thread, so
    ``finally`` and ``except BaseException`` blocks clean up; by default it ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def require_torch(what: str) -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise UserError(f"{what} needs PyTorch, which is not installed here; "
                        "install it with: pip install 'cicm-deploy[train]'")


def comma_list(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """A repeatable option that also takes comma-separated values: --x A,B == --x A --x B."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())
