"""Build the offline real-photo training set: fetch, decode, filter, deduplicate, save, record.

``fetch_photos(dest_dir, cache_dir)`` walks the candidates of ``photo_sources`` in a fixed order
(the packages in ``DEBIAN_SOURCES`` order, then scikit-image; files sorted within each), keeps
the photographs (``photo_filter``), drops duplicates (the first one seen is kept), and writes:

* ``dest_dir/<source>/<stem>-<8 hex>.jpg|png``: a JPEG source that needs no conversion is copied
  byte for byte; anything else (webp, png, CMYK or rotated JPEG) is saved as lossless PNG;
* ``dest_dir/manifest.json``: per photo its source package, package version, original path,
  licence (and where that came from), size and sha256; per source the counts; every rejected
  candidate with the reason. No timestamps: the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cicm_deploy.files import atomic_write
from cicm_deploy.images import ImageError, image_to_rgb, save_image

from .data import DataError
from .photo_filter import DuplicateFinder, PhotoThresholds, difference_hash, photo_verdict
from .photo_sources import (DEBIAN_SOURCES, SKIMAGE_SOURCE, Candidate, debian_candidates,
                            download_and_extract, require_debian_tools, short_name, skimage_candidates)
from .rcc import RccError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
EXIF_ORIENTATION = 0x0112


@dataclass
class SourceCount:
    version: str
    candidates: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason kind -> count


@dataclass
class FetchSummary:
    dest_dir: Path
    manifest: Path
    sources: dict[str, SourceCount]
    total: int
    total_bytes: int


def _pixel_sha256(rgb: np.ndarray) -> str:
    return hashlib.sha256(f"{rgb.shape}".encode() + rgb.tobytes()).hexdigest()


def _decode(candidate: Candidate) -> tuple[Image.Image, np.ndarray, bytes]:
    data = candidate.load()
    image = Image.open(io.BytesIO(data))
    image.load()
    return image, image_to_rgb(image, candidate.original_path), data


def _reject_kind(reason: str) -> str:
    return reason.split(" (")[0]


def _save(candidate: Candidate, image: Image.Image, rgb: np.ndarray, data: bytes, dest: Path) -> str:
    """Write the photo under ``dest``; return its '/'-separated path relative to ``dest``."""
    plain_jpeg = (image.format == "JPEG" and image.mode == "RGB"
                  and image.getexif().get(EXIF_ORIENTATION, 1) == 1)
    relative = f"{candidate.source}/{short_name(candidate.original_path)}{'.jpg' if plain_jpeg else '.png'}"
    path = dest / relative
    if plain_jpeg:  # already what load_image reads back: keep the original bytes, no re-encoding
        atomic_write(path, lambda handle: handle.write(data))
    else:
        save_image(path, rgb)
    return relative


def _candidate_groups(cache_dir: Path, sources: tuple[str, ...], include_skimage: bool
                      ) -> list[tuple[str, str, list[Candidate]]]:
    groups = []
    if sources:
        require_debian_tools()
    for package in sources:
        extracted = download_and_extract(package, cache_dir)
        groups.append((package, extracted.version, debian_candidates(extracted)))
    if include_skimage:
        found = skimage_candidates()
        if found:
            groups.append((SKIMAGE_SOURCE, found[0].version, found))
    return groups


def fetch_photos(dest_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                 sources: tuple[str, ...] | None = None, include_skimage: bool = True,
                 limits: PhotoThresholds | None = None, progress: bool = True) -> FetchSummary:
    """Fetch the packages into ``cache_dir`` and write the kept photos and manifest to ``dest_dir``.

    ``sources``: a subset of ``DEBIAN_SOURCES`` (default: all four); other packages are refused,
    they are kept for independent evaluation. ``include_skimage``: add scikit-image's bundled
    photos when it is installed. Raises ``DataError`` where apt-get/dpkg are missing or fail.
    """
    from tqdm import tqdm

    limits = limits or PhotoThresholds()
    sources = DEBIAN_SOURCES if sources is None else tuple(sources)
    unknown = [s for s in sources if s not in DEBIAN_SOURCES]
    if unknown:
        raise DataError(f"package(s) {', '.join(unknown)} are not training sources; expected a subset of "
                        f"{', '.join(DEBIAN_SOURCES)} (other photo packages are kept for independent evaluation)")
    dest, cache = Path(dest_dir), Path(cache_dir)
    if dest.exists() and not dest.is_dir():
        raise DataError(f"destination {dest} is a file; expected a folder (it is created if missing)")
    dest.mkdir(parents=True, exist_ok=True)
    previous = _previous_files(dest)

    photos: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    counts: dict[str, SourceCount] = {}
    duplicates = DuplicateFinder()
    for source, version, candidates in _candidate_groups(cache, sources, include_skimage):
        count = counts[source] = SourceCount(version, candidates=len(candidates))
        reasons: Counter[str] = Counter()
        for candidate in tqdm(candidates, desc=source, unit="img", disable=not progress, leave=False):
            entry, reason = _judge(candidate, limits, duplicates, dest)
            if entry is None:
                reasons[_reject_kind(reason)] += 1
                rejected.append({"source": source, "original_path": candidate.original_path, "reason": reason})
            else:
                photos.append(entry)
                count.kept += 1
        count.rejected = dict(sorted(reasons.items()))

    manifest = {
        "format_version": MANIFEST_FORMAT,
        "description": "Real photos for CICM training, from Debian packages and scikit-image (cicm-deploy data fetch)",
        "filter": asdict(limits),
        "sources": {name: asdict(count) for name, count in counts.items()},
        "photos": photos,
        "rejected": rejected,
    }
    manifest_path = dest / MANIFEST_NAME
    text = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    atomic_write(manifest_path, lambda handle: handle.write(text))
    for stale in sorted(previous - {p["file"] for p in photos}):  # left by an earlier run
        (dest / stale).unlink(missing_ok=True)
    return FetchSummary(dest, manifest_path, counts, len(photos), sum(p["bytes"] for p in photos))


def _previous_files(dest: Path) -> set[str]:
    try:
        old = json.loads((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
        return {p["file"] for p in old.get("photos", []) if isinstance(p, dict) and "file" in p}
    except (OSError, ValueError, AttributeError):
        return set()


def _judge(candidate: Candidate, limits: PhotoThresholds, duplicates: DuplicateFinder,
           dest: Path) -> tuple[dict[str, Any] | None, str]:
    """(manifest entry, "") for a kept photo, (None, reason) for a rejected candidate."""
    if candidate.excluded:
        return None, f"excluded by source rule ({candidate.excluded})"
    try:
        image, rgb, data = _decode(candidate)
    except ImageError as exc:
        kind = "transparent" if "transparency" in str(exc) else "unreadable"
        return None, f"{kind} ({exc})"
    except (OSError, ValueError, RccError, Image.DecompressionBombError) as exc:
        return None, f"unreadable ({exc})"
    keep, why, stats = photo_verdict(rgb, limits)
    if not keep:
        return None, why
    pixel_sha, dhash = _pixel_sha256(rgb), difference_hash(rgb)
    twin = duplicates.check(pixel_sha, dhash)
    if twin is not None:
        return None, f"duplicate (of {twin})"
    relative = _save(candidate, image, rgb, data, dest)
    duplicates.add(pixel_sha, dhash, relative)
    written = (dest / relative).read_bytes()
    return {
        "file": relative,
        "source": candidate.source,
        "version": candidate.version,
        "original_path": candidate.original_path,
        **candidate.licence,
        "width": int(rgb.shape[1]),
        "height": int(rgb.shape[0]),
        "bytes": len(written),
        "sha256": hashlib.sha256(written).hexdigest(),
        "stats": stats.as_dict(),
    }, ""
