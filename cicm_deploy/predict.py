"""Inpaint numpy images with a PyTorch model: pad to the stride, run, crop, round to uint8."""

from __future__ import annotations

import numpy as np
import torch

from .images import as_mask_array, as_rgb_array, check_same_size
from .model import UNetCICM
from .runtimes.base import finish_batch, prepare_batch


def is_device_name(name: object) -> bool:
    """auto, cpu, cuda or cuda:N: the devices the CLI and the trainer accept."""
    return isinstance(name, str) and (name in ("auto", "cpu", "cuda")
                                      or name.startswith("cuda:") and name[5:].isdigit())


def pick_device(name: str = "auto", fix: str = "use --device cpu") -> torch.device:
    """The torch device for ``name``; ValueError (ending in ``fix``) for a name or GPU this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not is_device_name(name):
        raise ValueError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but this torch {torch.__version__} sees no CUDA GPU; {fix}")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} was asked for but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


@torch.inference_mode()
def inpaint_array(model: UNetCICM, image, mask, *, invert: bool = False) -> np.ndarray:
    """RGB uint8 [H, W, 3] + mask (bool/uint8 [H, W], True/255 = hole) -> inpainted uint8 [H, W, 3].

    Pixels outside the hole are returned unchanged, byte for byte.
    """
    pair = (as_rgb_array(image), as_mask_array(mask, invert=invert))
    check_same_size(*pair)
    feeds = prepare_batch([pair], model.config.stride)
    device = next(model.parameters()).device
    out = model(torch.from_numpy(feeds["image"]).to(device), torch.from_numpy(feeds["mask"]).to(device)).composite
    return finish_batch(out.float().cpu().numpy(), [pair])[0]  # known pixels exact, whatever the rounding
