"""A short synthetic camera clip made from the shipped demo photo: a slow pan, as a dashcam or a
surveillance camera would see it. Shared by the examples; no download."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from cicm_deploy.images import load_image


def pan_frames(count: int = 24, width: int = 256, height: int = 192) -> list[np.ndarray]:
    photo = load_image(Path(str(resources.files("cicm_deploy") / "assets" / "demo" / "chambord.jpg")))
    span = photo.shape[1] - width
    top = (photo.shape[0] - height) // 2
    return [np.ascontiguousarray(photo[top:top + height, x:x + width])
            for x in np.linspace(0, span, count).astype(int)]
