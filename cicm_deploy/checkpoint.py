"""Checkpoints (DESIGN §3): a ``torch.save`` dict that rebuilds its model from its own config.

    {format_version, model_config, state_dict, optimizer, step, metrics[, trainer]}

Written atomically (temporary file in the same folder, fsync, rename), so a crash mid-write
leaves the previous checkpoint intact. Read with ``torch.load(weights_only=True)``: a file that
would run code when unpickled is refused, never executed. Every failure is a ``CheckpointError``
whose message says what was found, what was expected and what to do.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, ModelConfig
from .files import CHECKPOINT_KIND, FILE_KINDS, atomic_write, bundle_of, listing
from .model import UNetCICM

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_config", "state_dict")
ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A file that is not a loadable cicm-deploy checkpoint."""


def save_checkpoint(path: str | os.PathLike, model: UNetCICM, *, optimizer: torch.optim.Optimizer | None = None,
                    step: int = 0, metrics: dict[str, Any] | None = None,
                    trainer: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically; returns its path."""
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "metrics": dict(metrics or {}),
    }
    if trainer is not None:
        payload["trainer"] = trainer
    return atomic_torch_save(payload, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: ``path`` is whole or untouched.

    A failed write (disk full, read-only folder) raises an ``OSError`` that names ``path``, not the
    temporary file, with the system's reason (torch wraps it in a RuntimeError otherwise).
    """
    return atomic_write(path, lambda handle: torch.save(obj, handle), durable=True)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint dict (model not built)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a .pt file written by "
                              "`cicm-deploy train` or `cicm-deploy init`")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, expected a .pt file "
                              "(an export bundle directory is not a checkpoint)")
    other, bundle = FILE_KINDS.get(path.suffix.lower()), bundle_of(path)  # an image falls to the byte check below
    if other not in (None, CHECKPOINT_KIND):
        holder = f" ({bundle} is one)" if bundle else ""
        raise CheckpointError(f"{path} is {other}, not a PyTorch checkpoint (.pt): a bundle directory{holder} or an "
                              "engine runs without PyTorch, e.g. `cicm-deploy inpaint IMAGE MASK -o OUT --bundle DIR`")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head != ZIP_MAGIC:  # torch.save has written zip archives since PyTorch 1.6
        kind = "a bare pickle" if head[:1] == b"\x80" else f"a file starting with bytes {head!r}"
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({kind}); expected a .pt file written by "
                              "`cicm-deploy train` or `cicm-deploy init`. Bare pickles are never unpickled: "
                              "they can run code")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line for line in str(exc).splitlines() if "GLOBAL" in line), _first_line(exc))
        raise CheckpointError(
            f"refusing to load {path}: it holds objects that only a full unpickler could rebuild, which can run "
            f"code ({detail.strip()}). A cicm-deploy checkpoint holds only tensors and plain values; "
            "re-create it with `cicm-deploy train`, or load it only if you trust its source") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint or is truncated ({_first_line(exc)})") from None
    if not isinstance(data, dict) or not all(k in data for k in REQUIRED_KEYS):
        found = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} is not a cicm-deploy checkpoint: found {found}, expected a dict with keys "
                              f"{list(REQUIRED_KEYS)} (a bare state_dict cannot rebuild its model)")
    version = data["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format_version {version!r}; this cicm-deploy reads version "
                              f"{FORMAT_VERSION}. Upgrade cicm-deploy (or use the version that wrote it)")
    if not isinstance(data["state_dict"], dict):
        raise CheckpointError(f"{path}: state_dict is a {type(data['state_dict']).__name__}, expected a dict of tensors")
    return data


def config_from_checkpoint(data: dict[str, Any], path: str | os.PathLike = "checkpoint") -> ModelConfig:
    try:
        return ModelConfig.from_dict(data["model_config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its model_config is invalid: {exc}") from None


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[UNetCICM, dict[str, Any]]:
    """Rebuild the model from the checkpoint's config and load its weights (eval mode)."""
    data = read_checkpoint(path, map_location)
    config = config_from_checkpoint(data, path)
    model = UNetCICM(config)
    state = data["state_dict"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected)
                   if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {listing(unexpected)}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k} {_shape(state[k])} vs config {list(expected[k].shape)}" for k in wrong[:3]))
        raise CheckpointError(f"{path}: its weights do not match its model_config ({'; '.join(parts)}); "
                              "the file was edited or written by an incompatible tool")
    model.load_state_dict(state, strict=True)
    model.to(map_location)
    model.eval()
    return model, data


def _shape(value: Any) -> Any:
    return list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def save_release(source: str | os.PathLike, target: str | os.PathLike, **extra_metrics: Any) -> Path:
    """A shippable copy of a training checkpoint: weights, config, step and metrics only
    (no optimizer or trainer state, a third of the size)."""
    model, data = load_model(source)
    metrics = {**data.get("metrics", {}), **extra_metrics}
    return save_checkpoint(target, model, step=int(data.get("step", 0)), metrics=metrics)
