"""Training images: a folder dataset (pure numpy, no torch) and the offline photo set.

``ImageFolderDataset`` scans a folder recursively for jpg/jpeg/png/webp/bmp files, splits them
into train and validation by a hash of each file's relative path (stable when files are added or
removed, identical on every machine), and returns random crops as RGB ``uint8`` [H, W, 3] arrays.
Randomness comes only from the numpy ``Generator`` given to it, so a trainer controls it (one
generator per data-loader worker). Torch is not imported: a trainer wraps the dataset.

A file that cannot be read is skipped with a warning and counted in ``dataset.skipped``; an epoch
never stops on one. A folder that is missing, empty, or holds no readable image is a ``DataError``.

``fetch_photos`` builds the real-photo set from Debian packages (see ``photo_fetch``).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from cicm_deploy import CICMWarning
from cicm_deploy.images import ImageError, image_to_rgb, load_image

if TYPE_CHECKING:
    from .photo_fetch import FetchSummary

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLITS = ("train", "val", "all")


class DataError(ValueError):
    """Training data that cannot be used: what was given, what was expected, how to fix it."""


def is_validation(relative_path: str, val_fraction: float) -> bool:
    """Whether a file belongs to the validation split: sha1 of its '/'-separated relative path,
    read as a fraction in [0, 1), is below ``val_fraction``."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def scan_images(root: Path) -> list[str]:
    """Relative '/'-separated paths of the image files under ``root``, sorted (hidden entries skipped)."""
    found = []
    for folder, dirs, files in os.walk(root):  # does not follow directory symlinks: no loops
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append((Path(folder) / name).relative_to(root).as_posix())
    return sorted(found)


def _crop_shape(crop_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if crop_size is None:
        return None
    height, width = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if height < 1 or width < 1:
        raise DataError(f"crop size {crop_size} must be positive; expected e.g. 256 or (256, 384)")
    return int(height), int(width)


class ImageFolderDataset:
    """Random crops of the images in a folder, as RGB uint8 [crop_h, crop_w, 3] numpy arrays.

    ``dataset[i]`` draws from the generator given at construction; ``dataset.sample(i, rng)`` from
    an explicit one. The draws per sample are fixed (top, left, flip), so a seeded generator
    gives the same crops on every run. ``crop_size=None`` returns whole images (flipped at random
    when ``flip``).
    """

    def __init__(self, root: str | os.PathLike, crop_size: int | tuple[int, int] | None = 256,
                 split: str = "train", val_fraction: float = 0.05, flip: bool = True,
                 rng: np.random.Generator | None = None) -> None:
        self.root = Path(root)
        if split not in SPLITS:
            raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"val_fraction {val_fraction} must be in [0, 1); e.g. 0.05 keeps 5% for validation")
        if not self.root.is_dir():
            what = "is a file" if self.root.exists() else "does not exist"
            raise DataError(f"image folder {self.root} {what}; expected a folder of jpg/png/webp/bmp images "
                            "(fetch a photo set with `cicm-deploy data fetch DIR`)")
        self.crop = _crop_shape(crop_size)
        self.split, self.val_fraction, self.flip = split, val_fraction, flip
        self.rng = rng if rng is not None else np.random.default_rng(0)
        every = scan_images(self.root)
        if not every:
            raise DataError(f"image folder {self.root} contains no images (looked for "
                            f"{', '.join(IMAGE_SUFFIXES)}, recursively)")
        if split == "all":
            self.files = every
        else:
            want_val = split == "val"
            self.files = [p for p in every if is_validation(p, val_fraction) == want_val]
        if not self.files:
            raise DataError(f"the {split} split of {self.root} is empty ({len(every)} image files, val_fraction "
                            f"{val_fraction}); add photos or change the fraction (train: --set train.val_fraction=...; "
                            "eval: --split all or --val-fraction)")
        self.skipped_paths: set[str] = set()
        self._find_readable(0)  # fail now, not mid-epoch, when nothing can be read

    @property
    def skipped(self) -> int:
        """How many files were found unreadable (each skipped once, with a warning)."""
        return len(self.skipped_paths)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.sample(index, self.rng)

    def _skip(self, relative: str, why: Any) -> None:
        if isinstance(why, BaseException) and why.__cause__ is not None:
            why = why.__cause__  # the decoder's own words, whether the header check or the full load found it
        if relative not in self.skipped_paths:
            self.skipped_paths.add(relative)
            warnings.warn(f"skipping unreadable image {self.root / relative}: {why}", CICMWarning, stacklevel=3)

    def nothing_readable(self) -> DataError:
        return DataError(f"none of the {len(self.files)} image files in the {self.split} split of {self.root} "
                         "could be read; expected jpg/png/webp/bmp images")

    def _find_readable(self, index: int) -> int:
        """The first index from ``index`` on (wrapping) whose file opens as an image (header only)."""
        for step in range(len(self.files)):
            candidate = (index + step) % len(self.files)
            relative = self.files[candidate]
            if relative in self.skipped_paths:
                continue
            try:
                with Image.open(self.root / relative):  # reads the header only: cheap
                    return candidate
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                self._skip(relative, exc)
        raise self.nothing_readable()

    def load(self, index: int, fallback: bool = True) -> np.ndarray | None:
        """The whole image at ``index`` as RGB uint8 [H, W, 3]; when it cannot be read, the next
        readable one (``fallback``) or None."""
        for step in range(len(self.files) if fallback else 1):
            relative = self.files[(index + step) % len(self.files)]
            if relative in self.skipped_paths:
                continue
            try:
                return load_image(self.root / relative)
            except (ImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                self._skip(relative, exc)
        if not fallback:
            return None
        raise self.nothing_readable()

    def sample(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """A random crop (upscaled first if the image is smaller) and flip of image ``index``."""
        image = self.load(index)
        if self.crop is not None:
            image = random_crop(image, self.crop, rng)
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)


def random_crop(image: np.ndarray, crop: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A [crop_h, crop_w, 3] window of ``image``; a smaller image is first upscaled (bicubic,
    aspect kept) until both sides cover the crop."""
    crop_h, crop_w = crop
    h, w = image.shape[:2]
    if h < crop_h or w < crop_w:
        scale = max(crop_h / h, crop_w / w)
        size = (max(crop_w, math.ceil(w * scale)), max(crop_h, math.ceil(h * scale)))
        image = image_to_rgb(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
        h, w = image.shape[:2]
    top = int(rng.integers(0, h - crop_h + 1))
    left = int(rng.integers(0, w - crop_w + 1))
    return image[top:top + crop_h, left:left + crop_w]


def fetch_photos(dest_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                 sources: tuple[str, ...] | None = None, include_skimage: bool = True,
                 progress: bool = True) -> FetchSummary:
    """Build the offline real-photo set under ``dest_dir`` (see ``photo_fetch.fetch_photos``)."""
    from .photo_fetch import fetch_photos as fetch  # imported here: photo_fetch imports this module

    return fetch(dest_dir, cache_dir, sources=sources, include_skimage=include_skimage, progress=progress)
