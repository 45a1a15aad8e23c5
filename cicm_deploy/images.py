"""Image and mask I/O, the mask convention, and padding to the network stride. No torch.

Convention (DESIGN §3): images are RGB ``uint8`` arrays [H, W, 3]; masks are boolean [H, W]
with **True = hole** (in a mask file: white, 255). ``invert=True`` flips a mask whose holes are
black.

Conversions of files and arrays:

* grayscale (L, 1-bit), palette (P) and CMYK images are converted to RGB;
* 16-bit images (I;16, and I holding values in 0..65535) are scaled to 8 bits (v / 257, rounded);
* RGBA / LA / palette-with-transparency: dropped alpha if fully opaque, refused otherwise
  (transparent pixels have no defined colour: flatten the image, or pass the transparent area
  as the mask);
* 32-bit float images (F) and other modes are refused, naming the mode.

Mask binarization: the mask is converted to 8-bit luminance (0.299 R + 0.587 G + 0.114 B, 16-bit
scaled as above, alpha ignored) and a pixel is a hole when its value is >= 128. Boolean arrays
are taken as they are.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import CICMWarning
from .files import atomic_write

MASK_THRESHOLD = 128  # 8-bit luminance at or above which a mask pixel is a hole
# What to do about a mask of 0s and 1s, which the 255 = hole rule reads as no hole: in memory, in a file.
ZERO_ONE_ARRAY_FIX = "pass mask.astype(bool) or mask * 255 for a 0/1 mask"
ZERO_ONE_FILE_FIX = ("rewrite the file with 255 for the holes (e.g. ImageMagick: magick MASK.png -evaluate multiply 255 "
                     "OUT.png)")
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF",
                ".tiff": "TIFF"}


class ImageError(ValueError):
    """An image or mask that cannot be used, with what was given and what is expected."""


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{what} {path} does not exist")
    if path.is_dir():
        raise ImageError(f"{what} {path} is a directory, expected an image file (png, jpg, webp, bmp, tif)")
    image = None
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        if image is not None:
            image.close()  # a file that fails to decode must not leak its handle
        raise ImageError(f"{what} {path} is not a readable image ({exc}); expected png, jpg, webp, bmp or tif") from exc
    return image


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _gray_array(image: Image.Image, what: str) -> np.ndarray:
    """A single-channel 8-bit view of an L / 1 / I;16 / I image."""
    if image.mode in ("L", "1"):
        return np.asarray(image.convert("L"))
    if image.mode.startswith("I;16"):
        return _sixteen_to_eight(np.asarray(image).astype(np.uint16))
    if image.mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageError(f"{what} is a 32-bit integer image with values {values.min()}..{values.max()}; "
                             "expected 8- or 16-bit: save it as an 8-bit PNG")
        return _sixteen_to_eight(values)
    raise ImageError(f"{what} has mode {image.mode}, not a grayscale mode")


def image_to_rgb(image: Image.Image, what: str = "image") -> np.ndarray:
    """RGB uint8 [H, W, 3] from a PIL image, converting or refusing per the module rules."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image).copy()
    if mode in ("L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N"):
        gray = _gray_array(image, what)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(image.convert("RGB")).copy()
    if mode == "P":
        has_alpha = "transparency" in image.info or image.palette is not None and image.palette.mode == "RGBA"
        image = image.convert("RGBA" if has_alpha else "RGB")
        return image_to_rgb(image, what)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA" if mode != "LA" else "LA")
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:
            count = int((alpha < 255).sum())
            share = f"{100 * count / alpha.size:.1f}% of pixels" if count * 1000 >= alpha.size else \
                f"{count} pixel{'s' * (count > 1)}"
            raise ImageError(f"{what} has transparency ({mode}, {share} not opaque); expected an "
                             "opaque RGB image: flatten it onto a background, or pass the transparent area as the mask")
        return np.asarray(image.convert("RGB")).copy()
    raise ImageError(f"{what} has mode {mode} (e.g. a float image); expected an 8- or 16-bit RGB or grayscale image: "
                     "save it scaled to 0-255 as 8-bit (or 0-65535 as 16-bit) PNG or TIFF")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]."""
    return image_to_rgb(_open(path, "image"), f"image {path}")


PHOTO_LIKE_SHARE = 0.25  # a mask with more of its pixels mid-grey than this is likely a photo given as the mask


def mask_from_image(image: Image.Image, invert: bool = False, what: str = "mask",
                    zero_one_fix: str = ZERO_ONE_ARRAY_FIX, photo_check: bool = False) -> np.ndarray:
    """Boolean hole mask [H, W] from a PIL image, by the luminance >= 128 rule.

    ``photo_check`` (mask files; not per-frame masks, where it would cost a pass over every
    frame): warn when the image looks like a photo (a quarter or more of its pixels neither near
    black nor near white): a photo and a mask swapped on a command line would otherwise run silently.
    """
    if image.mode in ("L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N"):
        gray = _gray_array(image, what)
    elif image.mode == "F":
        raise ImageError(f"{what} is a 32-bit float image; expected an 8-bit mask (white = hole)")
    else:
        gray = np.asarray(image.convert("RGB").convert("L"))
    hole = gray >= MASK_THRESHOLD
    if photo_check:
        _warn_if_photo_like(gray, what)
    if not image.mode.startswith("I"):  # 16-bit values scaled to 8 bits can be 0/1 without being a 0/1 mask
        _warn_if_zero_one(hole, gray, what, invert, zero_one_fix)
    return ~hole if invert else hole


def _warn_if_photo_like(gray: np.ndarray, what: str) -> None:
    share = float(((gray >= 32) & (gray < 224)).mean())
    if share >= PHOTO_LIKE_SHARE and gray.size >= 32 * 32:  # a few pixels say little either way
        warnings.warn(f"{what} looks like a photo, not a mask ({100 * share:.0f}% of its pixels are neither near black "
                      "nor near white): a mask is white = hole, black = keep; were the photo and the mask swapped?",
                      CICMWarning, stacklevel=3)


def _warn_if_zero_one(hole: np.ndarray, values: np.ndarray, what: str, invert: bool,
                      fix: str = ZERO_ONE_ARRAY_FIX) -> None:
    """A mask of 0s and 1s (a common way to write one) is all kept or, inverted, all hole under the
    255 = hole rule: say so."""
    if not hole.any() and values.any() and int(values.max()) == 1:
        reading = "every pixel a hole (inverted)" if invert else "no hole at all"
        warnings.warn(f"{what} holds only 0s and 1s, which reads as {reading}: 255 (or True) marks a hole; {fix}",
                      CICMWarning, stacklevel=3)


def load_mask(path: str | os.PathLike, invert: bool = False) -> np.ndarray:
    """Read a mask file as bool [H, W], True = hole (white); ``invert`` for black holes.

    Warns when the file looks like a photo (``mask_from_image``'s ``photo_check``).
    """
    return mask_from_image(_open(path, "mask"), invert, f"mask {path}", zero_one_fix=ZERO_ONE_FILE_FIX,
                           photo_check=True)


def as_rgb_array(image: Any, what: str = "image") -> np.ndarray:
    """Validate or convert an in-memory image (numpy array or PIL image) to RGB uint8 [H, W, 3]."""
    if isinstance(image, Image.Image):
        return image_to_rgb(image, what)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"{what} has shape {list(np.shape(image))}; expected [H, W, 3] RGB (or [H, W] gray)")
    _check_not_empty(array, what)
    if array.dtype == np.uint16:
        array = _sixteen_to_eight(array)
    elif array.dtype != np.uint8:
        raise ImageError(f"{what} has dtype {array.dtype}; expected uint8 (or uint16) pixel values")
    if array.shape[2] == 4:
        if array[:, :, 3].min() < 255:
            raise ImageError(f"{what} is RGBA with transparent pixels; expected an opaque RGB image")
        array = array[:, :, :3]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def as_mask_array(mask: Any, invert: bool = False, what: str = "mask") -> np.ndarray:
    """Validate or convert an in-memory mask to bool [H, W] (True = hole)."""
    if isinstance(mask, Image.Image):
        return mask_from_image(mask, invert, what)
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ImageError(f"{what} has shape {list(array.shape)}; expected [H, W] (255 or True = hole)")
    _check_not_empty(array, what)
    if array.dtype == np.bool_:
        hole = array
    elif array.dtype == np.uint8:
        hole = array >= MASK_THRESHOLD
        _warn_if_zero_one(hole, array, what, invert)
    elif array.dtype == np.uint16:
        hole = _sixteen_to_eight(array) >= MASK_THRESHOLD
    else:
        raise ImageError(f"{what} has dtype {array.dtype}; expected bool or uint8 (255 = hole)")
    return ~hole if invert else hole


def _check_not_empty(array: np.ndarray, what: str) -> None:
    """A frame without pixels is a decoder's or a crop's failure: named, not passed through as empty."""
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{what} is {array.shape[1]}x{array.shape[0]} (width x height): it has no pixels")


def check_same_size(image: np.ndarray, mask: np.ndarray) -> None:
    if image.shape[:2] != mask.shape[:2]:
        ih, iw = image.shape[:2]
        mh, mw = mask.shape[:2]
        raise ImageError(f"image is {iw}x{ih} but mask is {mw}x{mh} (width x height); "
                         "the mask must have the image's size")


def pad_to_multiple(array: np.ndarray, stride: int) -> np.ndarray:
    """Reflect-pad the bottom and right of [H, W, ...] to multiples of ``stride``.

    Inputs smaller than the padding are reflected repeatedly (numpy's rule); ``crop`` undoes it.
    """
    h, w = array.shape[:2]
    return pad_to_size(array, h + (-h) % stride, w + (-w) % stride)


def pad_to_size(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad the bottom and right of [H, W, ...] to ``height`` x ``width`` (at least its size)."""
    h, w = array.shape[:2]
    if (h, w) == (height, width):
        return array
    pads = [(0, height - h), (0, width - w)] + [(0, 0)] * (array.ndim - 2)
    mode = "reflect" if min(h, w) > 1 else "edge"  # a single row or column has nothing to mirror
    return np.pad(array, pads, mode=mode)


def crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    return array[:height, :width]


def image_format(path: str | os.PathLike) -> str:
    """The format ``save_image`` writes ``path`` in; commands call it before the work, to fail early."""
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"cannot write {path}: unknown suffix {path.suffix!r}; expected one of "
                         f"{', '.join(sorted(SAVE_FORMATS))}")
    return fmt


def save_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write RGB uint8 [H, W, 3] (format from the suffix) atomically."""
    path = Path(path)
    fmt = image_format(path)
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    picture = Image.fromarray(as_rgb_array(image))
    return atomic_write(path, lambda handle: picture.save(handle, format=fmt, **options))


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write a bool mask as an 8-bit PNG, 255 = hole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(as_mask_array(mask), 255, 0).astype(np.uint8), mode="L").save(path)
    return path


def to_nchw(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H, W, 3] + bool [H, W] -> float32 image [1, 3, H, W] in [0, 1], mask [1, 1, H, W]."""
    x = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    m = np.ascontiguousarray(mask[None, None], dtype=np.float32)
    return x, m


def from_nchw(array: np.ndarray) -> np.ndarray:
    """float [1, 3, H, W] or [3, H, W] in [0, 1] -> uint8 [H, W, 3] (rounded)."""
    array = np.asarray(array)
    if array.ndim == 4:
        array = array[0]
    return np.clip(np.rint(array.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
