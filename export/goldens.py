"""Parity goldens: fixed, seeded real photos and masks of every bin, with PyTorch FP32 outputs.

Crops of the photos shipped in ``cicm_deploy/assets/photos`` in batches ("sets"): by default two
sets of 8 at two sizes (multiples of the stride); a static export gets sets of its own shape,
16 images at least, from photos enlarged first where that shape exceeds them. Masks cycle
through the paper's three hole-ratio bins. Stored with the composite and bottleneck routes of
the PyTorch FP32 model in ``parity.npz`` under ``"{set}.{name}"``, and with each route's margin
from a tie (``route_margin``, ``ContextMemory.route_margins``): parity accepts either route where
two sets score alike to within FP32 rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cicm_deploy.images import load_image
from cicm_deploy.model import UNetCICM
from cicm_deploy.train.masks import BIN_NAMES, BINS, free_form_mask

BASE_SIZES = ((128, 128), (128, 192))
SEED = 20221128
PIXELS_PER_CALL = 2**22  # PyTorch runs the goldens in chunks of at most this many pixels (memory)


def photo_paths() -> list[Path]:
    from importlib import resources

    folder = resources.files("cicm_deploy") / "assets" / "photos"
    paths = sorted(Path(str(p)) for p in folder.iterdir() if str(p).endswith(".jpg"))
    if not paths:
        raise FileNotFoundError(f"no photos in {folder}; the package data is missing (reinstall cicm-deploy)")
    return paths


def plan_sets(stride: int, static_hw: tuple[int, int] | None = None, batch: int | None = None,
              min_images: int = 16) -> list[tuple[int, int, int]]:
    """(height, width, count) per golden set."""
    def up(value: int) -> int:
        return -(-value // stride) * stride

    sizes = [static_hw] * len(BASE_SIZES) if static_hw else [(up(h), up(w)) for h, w in BASE_SIZES]
    if batch is None:
        per_set = -(-min_images // len(sizes))
        return [(h, w, per_set) for h, w in sizes]
    count = -(-min_images // batch)
    return [(*sizes[i % len(sizes)], batch) for i in range(count)]


def make_inputs(sets: list[tuple[int, int, int]], seed: int = SEED) -> dict[str, np.ndarray]:
    """{"sN.image": float32 [n,3,H,W], "sN.mask": float32 [n,1,H,W], "sN.bins": str [n]}."""
    rng = np.random.default_rng(seed)
    photos = [load_image(p) for p in photo_paths()]
    arrays: dict[str, np.ndarray] = {}
    counter = 0
    for index, (height, width, count) in enumerate(sets):
        images, masks, bins = [], [], []
        enlarged: dict[int, np.ndarray] = {}  # photo index -> photo covering this set's size (each resized once)
        for _ in range(count):
            which = counter % len(photos)
            photo = photos[which]
            if height > photo.shape[0] or width > photo.shape[1]:
                if which not in enlarged:
                    enlarged[which] = cover(photo, height, width)
                photo = enlarged[which]
            y = int(rng.integers(0, photo.shape[0] - height + 1))
            x = int(rng.integers(0, photo.shape[1] - width + 1))
            images.append(photo[y:y + height, x:x + width].transpose(2, 0, 1))
            bin_index = counter % len(BINS)
            masks.append(free_form_mask(height, width, rng, BINS[bin_index])[None])
            bins.append(BIN_NAMES[bin_index])
            counter += 1
        arrays[f"s{index}.image"] = np.stack(images).astype(np.float32) / 255.0
        arrays[f"s{index}.mask"] = np.stack(masks).astype(np.float32)
        arrays[f"s{index}.bins"] = np.array(bins)
    return arrays


def cover(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """``photo`` (uint8 [h, w, 3]) enlarged, aspect kept, until it covers height x width."""
    from PIL import Image

    scale = max(height / photo.shape[0], width / photo.shape[1])
    size = (max(width, round(photo.shape[1] * scale)), max(height, round(photo.shape[0] * scale)))
    return np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BICUBIC))


@torch.no_grad()
def make_goldens(model: UNetCICM, sets: list[tuple[int, int, int]]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Inputs plus PyTorch FP32 outputs; returns (arrays, set names)."""
    model = model.float().cpu().eval()
    arrays = make_inputs(sets)
    names = [f"s{i}" for i in range(len(sets))]
    level = str(max(model.config.cicm_levels)) if model.config.cicm_levels else None
    for name in names:
        images, masks = torch.from_numpy(arrays[f"{name}.image"]), torch.from_numpy(arrays[f"{name}.mask"])
        chunk = max(1, PIXELS_PER_CALL // (images.shape[2] * images.shape[3]))
        outs = [model(images[i:i + chunk], masks[i:i + chunk]) for i in range(0, len(images), chunk)]
        arrays[f"{name}.inpainted"] = torch.cat([o.composite for o in outs]).numpy()
        if level is not None:
            arrays[f"{name}.route"] = torch.cat([o.routes[level] for o in outs]).numpy().astype(np.int32)
            memory = model.memories[level]
            arrays[f"{name}.route_margin"] = torch.cat([memory.route_margins(o.features[level]) for o in outs]).numpy()
    return arrays, names
