"""Tell photographs from drawings, icons and flat graphics, and find duplicates. Numpy only.

The packages that supply training photos (see ``photo_sources``) also ship cartoons, icons,
textures, abstract wallpapers and product shots on white. Inpainting learned on those would learn
flat fills, so each candidate is judged on a few statistics of a working copy (long side <=
``WORK_SIDE``, area-averaged):

* ``min_side``: icons and thumbnails are small (and too small to crop from);
* ``chroma``: mean |R-G| + |G-B|: black-and-white photos and gray textures (the model is trained
  on colour images);
* ``entropy``: Shannon entropy (bits) of the 12-bit colour histogram (4 bits per channel): a
  drawing or a texture uses a handful of colours, a photo thousands;
* ``fill_share``: share of pixels that sit in a flat 3x3 neighbourhood (every channel within 2
  levels) *and* have an exact colour that covers at least ``FILL_COLOUR_SHARE`` of the image.
  A drawing's fills (and a studio backdrop, a cut-out hole) are one exact colour over a large
  area; a photo's sky is flat too but changes colour slowly, so no single exact colour covers
  much of it. (A plain "flat share" rejected a third of the landmark photos for their skies.)
* ``texture_share``: share of pixels with a luminance gradient above ``TEXTURE_GRADIENT``:
  computer-generated gradients (abstract wallpapers) have almost none.

The thresholds in ``PhotoThresholds`` were set by looking at every candidate of the four source
packages (Debian bookworm versions, 2026-11). Paintings and textured abstract art pass them:
colour statistics cannot tell those from photos (``photo_sources`` excludes the known ones by
path, and paintings that an upstream README calls so). They also cost some real photos: dark or
white studio backgrounds and very smooth close-ups read as fills or few colours.

Duplicates: ``sha256`` of the decoded pixels catches exact copies; a 64-bit difference hash of a
9x8 grayscale thumbnail catches resized or recompressed copies (Hamming distance <= ``max_bits``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

WORK_SIDE = 512  # statistics are computed on a copy whose long side is at most this
TEXTURE_GRADIENT = 12.0  # luminance levels per pixel (at WORK_SIDE) that count as texture
FILL_COLOUR_SHARE = 0.005  # a flat exact colour covering this share of the image is a fill
FLAT_SPREAD = 2  # a 3x3 neighbourhood within this many levels (every channel) is flat


@dataclass(frozen=True)
class PhotoThresholds:
    """Where a candidate stops looking like a photograph. Each field: the limit and why."""

    min_side: int = 256  # smaller images are icons or thumbnails, and too small to crop from
    min_chroma: float = 4.0  # below: grayscale (gray textures and black-and-white photos)
    min_entropy: float = 4.0  # bits; textures and cartoons measured 1.4-3.5, photos mostly 4.5-9
    max_fill_share: float = 0.20  # cut-out holes, cartoon fills, white backdrops measured 0.21-0.9
    min_texture_share: float = 0.01  # synthetic gradients measured <= 0.002, underwater photos 0.014


@dataclass(frozen=True)
class PhotoStats:
    min_side: int
    chroma: float
    entropy: float
    fill_share: float
    texture_share: float

    def as_dict(self) -> dict[str, float]:
        return {key: round(value, 4) if isinstance(value, float) else value
                for key, value in asdict(self).items()}


def working_copy(rgb: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """Area-downscale RGB uint8 [H, W, 3] so its long side is at most ``side``."""
    h, w = rgb.shape[:2]
    if max(h, w) <= side:
        return rgb
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))


def photo_stats(rgb: np.ndarray) -> PhotoStats:
    """The statistics above for RGB uint8 [H, W, 3]."""
    small = working_copy(rgb).astype(np.int32)  # [h, w, 3]
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    chroma = float((np.abs(r - g) + np.abs(g - b)).mean())

    codes12 = ((r >> 4) << 8) | ((g >> 4) << 4) | (b >> 4)
    probs = np.bincount(codes12.ravel(), minlength=4096) / codes12.size
    probs = probs[probs > 0]
    entropy = float(-(probs * np.log2(probs)).sum())

    luma = 0.299 * r + 0.587 * g + 0.114 * b
    gy, gx = np.gradient(luma)
    texture_share = float((np.hypot(gx, gy) > TEXTURE_GRADIENT).mean())
    return PhotoStats(min_side=int(min(rgb.shape[:2])), chroma=chroma, entropy=entropy,
                      fill_share=_fill_share(small), texture_share=texture_share)


def _fill_share(small: np.ndarray) -> float:
    """Share of pixels that are flat and whose exact colour is a large fill (see module doc)."""
    h, w = small.shape[:2]
    if h < 3 or w < 3:
        return 1.0
    windows = np.stack([small[dy:h - 2 + dy, dx:w - 2 + dx] for dy in range(3) for dx in range(3)])
    flat = (windows.max(axis=0) - windows.min(axis=0)).max(axis=-1) <= FLAT_SPREAD  # [h-2, w-2]
    centre = small[1:-1, 1:-1]
    codes = (centre[..., 0] << 16) | (centre[..., 1] << 8) | centre[..., 2]
    _, counts = np.unique(codes[flat], return_counts=True)
    fills = counts[counts >= FILL_COLOUR_SHARE * codes.size]
    return float(fills.sum() / codes.size)


def photo_verdict(rgb: np.ndarray, limits: PhotoThresholds = PhotoThresholds()) -> tuple[bool, str, PhotoStats]:
    """(is a photo, "photo" or why not, the statistics) for RGB uint8 [H, W, 3]."""
    if min(rgb.shape[:2]) < limits.min_side:  # cheap: no statistics for icons
        stats = PhotoStats(int(min(rgb.shape[:2])), 0.0, 0.0, 0.0, 0.0)
        return False, f"too small ({rgb.shape[1]}x{rgb.shape[0]}, min side < {limits.min_side})", stats
    stats = photo_stats(rgb)
    if stats.chroma < limits.min_chroma:
        return False, f"grayscale (chroma {stats.chroma:.1f} < {limits.min_chroma})", stats
    if stats.entropy < limits.min_entropy:
        return False, f"few colours (entropy {stats.entropy:.2f} < {limits.min_entropy} bits)", stats
    if stats.fill_share > limits.max_fill_share:
        return False, f"flat colour fills ({stats.fill_share:.0%} > {limits.max_fill_share:.0%})", stats
    if stats.texture_share < limits.min_texture_share:
        return False, f"smooth synthetic gradient (texture {stats.texture_share:.1%})", stats
    return True, "photo", stats


def difference_hash(rgb: np.ndarray) -> int:
    """64-bit dHash: sign of horizontal steps in a 9x8 grayscale thumbnail (robust to resizing)."""
    gray = Image.fromarray(rgb).convert("L").resize((9, 8), Image.Resampling.BOX)
    pixels = np.asarray(gray, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


class DuplicateFinder:
    """Remembers kept images; ``check`` says which earlier one a new image duplicates, if any."""

    def __init__(self, max_bits: int = 4) -> None:
        self.max_bits = max_bits  # Hamming distance at or below which two dHashes are the same picture
        self._sha: dict[str, str] = {}
        self._dhash: list[tuple[int, str]] = []

    def check(self, pixel_sha256: str, dhash: int) -> str | None:
        """The name of the kept image this one duplicates, or None."""
        if pixel_sha256 in self._sha:
            return self._sha[pixel_sha256]
        for other, name in self._dhash:
            if bin(other ^ dhash).count("1") <= self.max_bits:
                return name
        return None

    def add(self, pixel_sha256: str, dhash: int, name: str) -> None:
        self._sha[pixel_sha256] = name
        self._dhash.append((dhash, name))
