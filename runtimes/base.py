"""The one ``Runtime`` base every backend implements (DESIGN §4). No torch.

Split after Polygraphy's loader/runner: a subclass builds its session or engine lazily in
``_load`` (called by ``load``, by the context manager, or on the first inference), and runs raw
feed dicts in ``_run``. The base checks inputs against the bundle's manifest (names, rank,
dtypes, channels, stride) with messages that quote both sides, times inference, and turns
uint8 images into graph inputs and back:

    with OnnxRuntimeBackend(bundle) as rt:
        out = rt.infer(image_uint8_hwc, mask_bool_hw)      # uint8 [H, W, 3]
        raw = rt.run({"image": x, "mask": m})               # {"inpainted": ..., "route": ...}
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from cicm_deploy.images import as_mask_array, as_rgb_array, check_same_size, crop, from_nchw, pad_to_multiple, pad_to_size

from .bundle import Bundle

INPUT_CHANNELS = {"image": 3, "mask": 1}


class RuntimeInputError(ValueError):
    """Inputs that do not match what the graph expects."""


class BackendUnavailableError(RuntimeError):
    """The backend's library (or the plugin it needs) is not installed here."""


class InferenceError(RuntimeError):
    """The backend failed while running inputs that passed the checks (out of memory, a graph at odds
    with its manifest): not the caller's mistake."""


class NonFiniteOutputError(InferenceError):
    """A backend produced NaN or Inf: never passed on as an image."""


class Runtime(ABC):
    backend = "base"

    def __init__(self, bundle: Bundle | None) -> None:
        self.bundle = bundle
        self.loaded = False
        self.last_inference_time: float | None = None  # seconds, last ``run``

    # -- lifecycle --------------------------------------------------------------------------
    def load(self) -> "Runtime":
        if not self.loaded:
            self._load()
            self.loaded = True
        return self

    def close(self) -> None:
        if self.loaded:
            self._close()
            self.loaded = False

    def __enter__(self) -> "Runtime":
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @abstractmethod
    def _load(self) -> None: ...

    def _close(self) -> None:
        pass

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Backend, device, precision, routing and library versions."""

    # -- what the graph takes (a bundle's manifest; the PyTorch backend overrides) --------------
    @property
    def input_specs(self) -> list[dict[str, Any]]:
        return self.bundle.manifest["inputs"]

    @property
    def stride(self) -> int:
        return self.bundle.stride

    @property
    def fixed_shape(self) -> tuple[int | None, int | None, int | None]:
        """(batch, height, width) the graph's image input is fixed at; None where it is dynamic."""
        shape = next(s["shape"] for s in self.input_specs if s["name"] == "image")
        b, _, h, w = (d if isinstance(d, int) else None for d in shape)
        return b, h, w

    # -- inference --------------------------------------------------------------------------
    def check_feeds(self, feeds: dict[str, np.ndarray], values: bool = True) -> None:
        """Names, types and shapes against the graph; with ``values`` also the values (finite, image in
        [0, 1], mask 0/1), which feeds built from uint8 frames (``infer``) hold by construction."""
        expected = [i["name"] for i in self.input_specs]
        if sorted(feeds) != sorted(expected):
            raise RuntimeInputError(f"inputs {sorted(feeds)} given, the graph expects {sorted(expected)}")
        stride = self.stride
        batch = None
        for spec in self.input_specs:
            name, value = spec["name"], feeds[spec["name"]]
            if not isinstance(value, np.ndarray) or value.dtype != np.dtype(spec["dtype"]):
                given = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
                raise RuntimeInputError(f"input {name!r} is {given}, the graph expects {spec['dtype']}")
            shape = spec["shape"]
            if value.ndim != len(shape):
                raise RuntimeInputError(f"input {name!r} has shape {list(value.shape)}, the graph expects "
                                        f"{shape} (rank {len(shape)})")
            wrong = [(axis, want) for axis, (want, got) in enumerate(zip(shape, value.shape))
                     if isinstance(want, int) and want != got]
            if wrong:
                rule = "; ".join(f"axis {axis} must be {want}" for axis, want in wrong)
                raise RuntimeInputError(f"input {name!r} has shape {list(value.shape)}, the graph expects "
                                        f"{shape} ({rule})")
            if value.shape[2] % stride or value.shape[3] % stride:
                raise RuntimeInputError(f"input {name!r} is {value.shape[2]}x{value.shape[3]}; height and width "
                                        f"must be multiples of {stride} (pad it; `cicm-deploy inpaint` and Runtime.infer() pad "
                                        "images for you)")
            if 0 in value.shape:
                raise RuntimeInputError(f"input {name!r} has shape {list(value.shape)}; every axis needs at least 1")
            batch = batch or value.shape[0]
            if value.shape[0] != batch:
                raise RuntimeInputError(f"inputs have different batch sizes ({batch} and {value.shape[0]})")
        if feeds["image"].shape[2:] != feeds["mask"].shape[2:]:
            raise RuntimeInputError(f"image is {list(feeds['image'].shape)} but mask is {list(feeds['mask'].shape)}; "
                                    "height and width must match")
        if not values:
            return
        for name, value in feeds.items():
            if not np.isfinite(value).all():
                raise RuntimeInputError(f"input {name!r} holds NaN or Inf values; expected finite values "
                                        "(image in [0, 1], mask 0 or 1)")
        mask = feeds["mask"]
        odd = (mask != 0) & (mask != 1)
        if odd.any():
            raise RuntimeInputError(f"input 'mask' holds values other than 0 and 1 (e.g. {float(mask[odd][0]):g}); "
                                    "the graph expects 1 = hole, 0 = keep (divide a 0/255 mask by 255)")
        low, high = float(feeds["image"].min()), float(feeds["image"].max())
        if low < 0.0 or high > 1.0:
            raise RuntimeInputError(f"input 'image' holds values from {low:g} to {high:g}; the graph expects [0, 1] "
                                    "(divide 8-bit pixels by 255)")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw graph inputs -> outputs by name (float32 NCHW image in [0, 1], mask 1 = hole)."""
        self.check_feeds(feeds)
        return self._checked_run(feeds)

    def _checked_run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        start = time.perf_counter()
        outputs = self._run(feeds)
        self.last_inference_time = time.perf_counter() - start
        for name, value in outputs.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise NonFiniteOutputError(f"the {self.backend} backend produced NaN/Inf in {name!r}: the model or "
                                           "engine is broken for this input (FP16 overflow? see the bundle's "
                                           "largest_fp32_intermediates)")
        return outputs

    def infer(self, image: Any, mask: Any, invert: bool = False) -> np.ndarray:
        """RGB uint8 [H, W, 3] + mask [H, W] (True/255 = hole) -> inpainted uint8 [H, W, 3]."""
        return self.infer_batch([image], [mask], invert=invert)[0]

    def infer_batch(self, images: Sequence[Any], masks: Sequence[Any], invert: bool = False) -> list[np.ndarray]:
        """Same-sized frames go through the graph as one batch; others one by one."""
        if len(images) != len(masks):
            raise RuntimeInputError(f"{len(images)} images but {len(masks)} masks")
        pairs = []
        for index, (image, mask) in enumerate(zip(images, masks)):
            rgb = as_rgb_array(image, f"image {index}")
            hole = as_mask_array(mask, invert=invert, what=f"mask {index}")
            check_same_size(rgb, hole)
            pairs.append((rgb, hole))
        results: list[np.ndarray | None] = [None] * len(pairs)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, (rgb, _) in enumerate(pairs):
            by_size.setdefault(rgb.shape[:2], []).append(index)
        for indices in by_size.values():
            for index, result in zip(indices, self.infer_pairs([pairs[i] for i in indices])):
                results[index] = result
        return [r for r in results if r is not None]

    def infer_pairs(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Same-sized (uint8 [H, W, 3], bool [H, W]) pairs -> inpainted frames, through the graph as
        one batch. A graph exported with --static/--batch gets its fixed size (the frames are padded
        up to it) and its fixed batch (chunks of it, the last one filled with repeats)."""
        if not pairs:
            return []
        fixed_batch, fixed_h, fixed_w = self.fixed_shape
        size = None
        if fixed_h is not None or fixed_w is not None:
            h, w = pairs[0][0].shape[:2]
            size = (fixed_h or h + (-h) % self.stride, fixed_w or w + (-w) % self.stride)
            if h > size[0] or w > size[1]:
                raise RuntimeInputError(f"this bundle is fixed at {fixed_h}x{fixed_w} (HxW, exported with --static) "
                                        f"and the image is {h}x{w} (HxW): give images of at most that size, or export without "
                                        "--static for any size")
        step = fixed_batch or len(pairs)
        frames: list[np.ndarray] = []
        for start in range(0, len(pairs), step):
            chosen = list(pairs[start:start + step])
            feeds = prepare_batch(chosen + [chosen[-1]] * (step - len(chosen)), self.stride, size)
            self.check_feeds(feeds, values=False)  # built here from uint8 frames: the values hold
            frames += finish_batch(self._checked_run(feeds)["inpainted"][:len(chosen)], chosen)
        return frames


def prepare_batch(pairs: Sequence[tuple[np.ndarray, np.ndarray]], stride: int,
                  size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Same-sized (uint8 [H, W, 3], bool [H, W]) pairs -> padded float32 graph inputs (to multiples of
    ``stride``, or to ``size`` for a graph of fixed height and width)."""
    def pad(array: np.ndarray) -> np.ndarray:
        return pad_to_multiple(array, stride) if size is None else pad_to_size(array, *size)

    x = np.stack([pad(rgb).transpose(2, 0, 1) for rgb, _ in pairs]).astype(np.float32) / 255.0
    m = np.stack([pad(hole)[None] for _, hole in pairs]).astype(np.float32)
    return {"image": x, "mask": m}


def finish_batch(inpainted: np.ndarray, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Graph output -> cropped uint8 frames; pixels outside each hole copied from the input, exactly."""
    frames = []
    for row, (rgb, hole) in enumerate(pairs):
        result = crop(from_nchw(inpainted[row]), *hole.shape)
        frames.append(np.where(hole[:, :, None], result, rgb))
    return frames
