"""Quality evaluation: PSNR, SSIM and L1 per hole-ratio bin, against OpenCV's classical inpainting.

Conventions (stated in every report):
* PSNR and SSIM with scikit-image on uint8 RGB, ``data_range=255``, over the whole composite
  image (known pixels included, as the inpainting literature reports it);
* SSIM as Wang et al.: Gaussian window sigma 1.5, ``use_sample_covariance=False``, per channel
  then averaged;
* L1: mean absolute error over all pixels, in percent of the full range (the paper's unit);
* LPIPS and FID are not reported: both need network weights downloaded at run time, which this
  project never does.

Baselines: OpenCV's Telea (fast marching) and Navier-Stokes inpainting, radius 3, and the exact
harmonic fill (a sparse solve of Laplace's equation in the hole), on the same images and masks. Evaluation crops: the validation split of a photo folder, each photo scaled so
its short side is ``size`` and center-cropped to ``size`` x ``size``; masks: the fixed seeded
evaluation set, ``per_bin`` of each bin, paired with the photos in order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from .masks import BIN_NAMES, evaluation_masks

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]  # uint8 HxWx3, bool HxW -> uint8 HxWx3
CONVENTION = ("PSNR/SSIM: scikit-image on uint8 RGB, data_range=255, whole composite image; SSIM with a "
              "Gaussian window (sigma 1.5) and use_sample_covariance=False (Wang et al.); L1: mean absolute "
              "error in % of 255. LPIPS and FID are not reported: they need network weights downloaded at run "
              "time, which this project never does.")


def telea(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.inpaint(image, mask.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)


def navier_stokes(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.inpaint(image, mask.astype(np.uint8) * 255, 3, cv2.INPAINT_NS)


def harmonic_solution(values: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Laplace's equation (5-point stencil) solved exactly in ``hole`` [H, W] (bool), the other
    pixels of ``values`` [H, W, C] as boundary; neighbours outside the image are left out. One
    sparse direct solve for all channels. Returns float64 [H, W, C]."""
    import scipy.sparse
    from scipy.sparse.linalg import spsolve

    height, width, channels = values.shape
    flat = values.reshape(-1, channels).astype(np.float64)
    if not hole.any():
        return flat.reshape(values.shape)
    index = -np.ones(hole.shape, dtype=np.int64)
    index[hole] = np.arange(int(hole.sum()))
    ys, xs = np.nonzero(hole)
    me_all = index[ys, xs]
    degree = np.zeros(len(ys))
    rows, cols, data = [], [], []
    rhs = np.zeros((len(ys), channels))
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        degree += inside
        me, ny, nx = me_all[inside], ny[inside], nx[inside]
        free = hole[ny, nx]
        rows.append(me[free]), cols.append(index[ny[free], nx[free]]), data.append(-np.ones(int(free.sum())))
        np.add.at(rhs, me[~free], flat[ny[~free] * width + nx[~free]])
    rows.append(me_all), cols.append(me_all), data.append(degree)
    matrix = scipy.sparse.csc_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                                     shape=(len(ys), len(ys)))
    out = flat.copy()
    out[hole.reshape(-1)] = spsolve(matrix, rhs).reshape(len(ys), channels)
    return out.reshape(values.shape)


def exact_harmonic(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The harmonic fill, solved exactly (``harmonic_solution``), as a uint8 predictor."""
    return np.clip(harmonic_solution(image, mask.astype(bool)) + 0.5, 0, 255).astype(np.uint8)


BASELINES: dict[str, Predictor] = {"Telea": telea, "Navier-Stokes": navier_stokes, "Harmonic (exact)": exact_harmonic}


def metrics(reference: np.ndarray, result: np.ndarray) -> dict[str, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ref, res = reference.astype(np.float64), result.astype(np.float64)
    psnr = peak_signal_noise_ratio(ref, res, data_range=255) if not np.array_equal(ref, res) else math.inf
    ssim = structural_similarity(ref, res, data_range=255, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return {"psnr": float(psnr), "ssim": float(ssim), "l1": float(np.abs(ref - res).mean() / 255 * 100)}


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = size / min(h, w)
    if scale != 1.0:
        image = np.asarray(Image.fromarray(image).resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                                         Image.Resampling.LANCZOS))
    h, w = image.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[y:y + size, x:x + size])


@dataclass
class EvalSet:
    images: list[np.ndarray]  # uint8 [size, size, 3]
    masks: list[np.ndarray]  # bool [size, size]
    bins: list[str]
    sources: list[str] = field(default_factory=list)


def build_eval_set(folder: str, size: int = 256, per_bin: int = 8, split: str = "val",
                   val_fraction: float = 0.05, seed: int = 2022) -> EvalSet:
    from .data import ImageFolderDataset

    dataset = ImageFolderDataset(folder, crop_size=None, split=split, val_fraction=val_fraction, flip=False)
    masks = evaluation_masks(size, size, per_bin, seed=seed)
    images, sources = [], []
    for index in range(len(masks)):
        images.append(center_crop(dataset.load(index % len(dataset)), size))
        sources.append(dataset.files[index % len(dataset)])
    return EvalSet(images, [m for _, m in masks], [b for b, _ in masks], sources)


def evaluate(methods: dict[str, Predictor], data: EvalSet, progress: bool = True) -> dict[str, Any]:
    """{method: {bin: {psnr, ssim, l1, n}}} plus the per-image values."""
    from tqdm import tqdm

    per_image: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    total = len(methods) * len(data.images)
    with tqdm(total=total, disable=not progress, unit="img", desc="evaluating") as bar:
        for name, predict in methods.items():
            for image, mask, bin_name in zip(data.images, data.masks, data.bins):
                result = predict(image, mask)
                per_image[name].append({"bin": bin_name, **metrics(image, result)})
                bar.update(1)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, rows in per_image.items():
        summary[name] = {}
        for bin_name in [*BIN_NAMES, "all"]:
            chosen = [r for r in rows if bin_name == "all" or r["bin"] == bin_name]
            if chosen:
                finite = [r["psnr"] for r in chosen if math.isfinite(r["psnr"])]
                summary[name][bin_name] = {"psnr": float(np.mean(finite)) if finite else math.inf,
                                           "ssim": float(np.mean([r["ssim"] for r in chosen])),
                                           "l1": float(np.mean([r["l1"] for r in chosen])), "n": len(chosen)}
    return {"convention": CONVENTION, "summary": summary, "per_image": per_image}


def markdown_table(summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    bins = [b for b in BIN_NAMES if any(b in s for s in summary.values())]
    head = "| method | " + " | ".join(f"PSNR {b}" for b in bins) + " | " + " | ".join(f"SSIM {b}" for b in bins) \
        + " | " + " | ".join(f"L1% {b}" for b in bins) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(bins))]
    for name, per_bin in summary.items():
        cells = [f"{per_bin[b]['psnr']:.2f}" for b in bins] + [f"{per_bin[b]['ssim']:.4f}" for b in bins] + \
                [f"{per_bin[b]['l1']:.3f}" for b in bins]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def example_grid(methods: dict[str, Predictor], data: EvalSet, indices: list[int], path: Path, tile: int = 160) -> Path:
    """PNG: one row per example: masked input, mask, each method, ground truth."""
    from PIL import ImageDraw

    columns = ["input", "mask", *methods, "ground truth"]
    label_h = 18
    grid = Image.new("RGB", (tile * len(columns), label_h + tile * len(indices)), "white")
    draw = ImageDraw.Draw(grid)
    for col, name in enumerate(columns):
        draw.text((col * tile + 4, 3), name, fill="black")
    for row, index in enumerate(indices):
        image, mask = data.images[index], data.masks[index]
        masked = image.copy()
        masked[mask] = 255
        cells = [masked, np.repeat((mask * 255).astype(np.uint8)[:, :, None], 3, 2)]
        cells += [predict(image, mask) for predict in methods.values()]
        cells.append(image)
        for col, cell in enumerate(cells):
            thumb = Image.fromarray(cell).resize((tile, tile), Image.Resampling.LANCZOS)
            grid.paste(thumb, (col * tile, label_h + row * tile))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def comparison_lines(summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """The first method against each other one, per bin, in PSNR: where it does not win, by how much."""
    names = list(summary)
    if len(names) < 2:
        return []
    first = names[0]
    bins = [b for b in BIN_NAMES if b in summary[first]]
    lines = [f"{first} against each other method (PSNR difference, dB; positive = {first} better):", ""]
    for other in names[1:]:
        diffs = {b: summary[first][b]["psnr"] - summary[other][b]["psnr"] for b in bins if b in summary[other]}
        cells = ", ".join(f"{b}: {d:+.2f}" for b, d in diffs.items())
        losses = [f"{b} (by {-d:.2f} dB)" for b, d in diffs.items() if d <= 0]
        verdict = f"{first} does not beat {other} in " + ", ".join(losses) if losses else f"{first} beats {other} in every bin"
        lines.append(f"- vs {other}: {cells}. {verdict}.")
    return lines + [""]


def write_report(result: dict[str, Any], out: Path, title: str, notes: list[str]) -> tuple[Path, Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")  # out: a prefix
    json_path.write_text(json.dumps({k: v for k, v in result.items()}, indent=2, default=float) + "\n")
    lines = [f"# {title}", "", *notes, "", *markdown_table(result["summary"]), "",
             *comparison_lines(result["summary"]), f"Conventions: {result['convention']}"]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path
