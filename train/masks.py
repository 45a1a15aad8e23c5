"""Hole masks: free-form strokes and boxes, binned by hole ratio, and loaders. No torch.

Masks are bool [H, W] with True = hole (DESIGN §3). The generator draws random brush strokes
(polylines of random width with round joints) and boxes, in the style of the irregular masks used
across the inpainting literature, and keeps drawing until the hole ratio lands in a requested
bin. The paper bins hole ratios 0–20 %, 20–40 % and 40–60 %.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cicm_deploy.images import ImageError, load_mask

BINS: tuple[tuple[float, float], ...] = ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6))
BIN_NAMES = ("0-20%", "20-40%", "40-60%")
MASK_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def hole_ratio(mask: np.ndarray) -> float:
    return float(np.asarray(mask, dtype=bool).mean())


def bin_index(ratio: float) -> int | None:
    """Index of the paper bin holding ``ratio`` (an exact 0 counts as no hole: None)."""
    if ratio <= 0.0:
        return None
    for index, (low, high) in enumerate(BINS):
        if low < ratio <= high:
            return index
    return None


def _stroke(draw: ImageDraw.ImageDraw, rng: np.random.Generator, height: int, width: int) -> None:
    size = min(height, width)
    x, y = rng.uniform(0, width), rng.uniform(0, height)
    brush = int(rng.uniform(0.03, 0.12) * size) + 1
    points = [(x, y)]
    for _ in range(int(rng.integers(2, 7))):
        angle = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.08, 0.35) * size
        x = float(np.clip(x + length * math.cos(angle), 0, width - 1))
        y = float(np.clip(y + length * math.sin(angle), 0, height - 1))
        points.append((x, y))
    draw.line(points, fill=255, width=brush, joint="curve")
    r = brush / 2
    for px, py in points:  # round caps
        draw.ellipse([px - r, py - r, px + r, py + r], fill=255)


def _box(draw: ImageDraw.ImageDraw, rng: np.random.Generator, height: int, width: int) -> None:
    bh, bw = rng.uniform(0.1, 0.35) * height, rng.uniform(0.1, 0.35) * width
    y, x = rng.uniform(0, height - bh), rng.uniform(0, width - bw)
    draw.rectangle([x, y, x + bw, y + bh], fill=255)


def free_form_mask(height: int, width: int, rng: np.random.Generator,
                   target: tuple[float, float] | None = None, max_tries: int = 50) -> np.ndarray:
    """A stroke-and-box mask. With ``target=(low, high)`` its hole ratio lies in (low, high]."""
    low, high = target if target is not None else (0.0, BINS[-1][1])
    for _ in range(max_tries):
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        goal = rng.uniform(max(low, 0.01), high)
        ratio = 0.0
        array = np.zeros((height, width), dtype=bool)
        for _ in range(200):
            if rng.random() < 0.8:
                _stroke(draw, rng, height, width)
            else:
                _box(draw, rng, height, width)
            array = np.asarray(canvas) > 0
            ratio = hole_ratio(array)
            if ratio >= goal:
                break
        if low < ratio <= high:
            return array
    raise RuntimeError(f"could not draw a {height}x{width} mask with a hole ratio in ({low}, {high}] "
                       f"in {max_tries} tries")


def sample_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A training mask: a bin chosen uniformly, then a mask in it (hole ratios cover 0–60 %)."""
    return free_form_mask(height, width, rng, BINS[int(rng.integers(len(BINS)))])


def evaluation_masks(height: int, width: int, per_bin: int, seed: int = 2022) -> list[tuple[str, np.ndarray]]:
    """A fixed, seeded set: ``per_bin`` masks for each paper bin, as (bin name, mask)."""
    rng = np.random.default_rng(seed)
    return [(name, free_form_mask(height, width, rng, BINS[index]))
            for index, name in enumerate(BIN_NAMES) for _ in range(per_bin)]


class MaskFolder:
    """Masks from a folder (e.g. an irregular-mask set people already use), white = hole.

    ``invert=True`` for sets whose holes are black. ``get(index, height, width)`` resizes with
    nearest neighbour to the requested size.
    """

    def __init__(self, folder: str | os.PathLike, invert: bool = False) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ImageError(f"mask folder {self.folder} does not exist or is not a directory")
        self.paths = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in MASK_SUFFIXES)
        if not self.paths:
            raise ImageError(f"mask folder {self.folder} holds no mask images ({', '.join(sorted(MASK_SUFFIXES))})")
        self.invert = invert

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int, height: int, width: int) -> np.ndarray:
        mask = load_mask(self.paths[index % len(self.paths)], invert=self.invert)
        if mask.shape != (height, width):
            resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
            mask = np.asarray(resized) >= 128
        return mask
