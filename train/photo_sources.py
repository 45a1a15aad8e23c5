"""Where the training photos come from, and under which licence each one is.

No dataset downloads (DESIGN §6): real photos come from four Debian packages, fetched with
``apt-get download`` and unpacked with ``dpkg -x`` into a cache (never installed), and from the
photos bundled with scikit-image. Other photo packages are kept for independent evaluation and
are refused here.

Each raster file becomes a ``Candidate`` that ``photo_fetch`` decodes, filters and saves.
GCompris keeps its images inside Qt resource files (``.rcc``, read with ``rcc.RccArchive``).

Licences, most specific first: an upstream statement next to the file (GCompris' per-folder
README inside the .rcc, Palapeli's ``.desktop`` sidecar), else the package's Debian copyright
file (see ``debian_copyright``). The Debian answer is always recorded too.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from .data import DataError
from .debian_copyright import CopyrightFile, LicenceInfo, normalise_licence, parse_stanzas, readme_licence
from .rcc import RccArchive

DEBIAN_SOURCES = ("gcompris-qt-data", "mate-backgrounds", "lomiri-wallpapers-16.04", "palapeli-data")
SKIMAGE_SOURCE = "scikit-image"
RASTER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SKIPPED_TREES = ("usr/share/doc/", "usr/share/icons/")  # manual screenshots and icons, never photos
README_NAMES = ("README", "readme", "README.txt", "readme.txt")

# Known non-photos that pass the colour statistics, as (glob on the original path, why).
NOT_PHOTOS: dict[str, tuple[tuple[str, str], ...]] = {
    "gcompris-qt-data": (
        ("*/activities/babyshapes/*", "shape-puzzle art (paintings with cut-out holes, photos under flat shapes)"),
    ),
    "mate-backgrounds": (
        ("*/mate/abstract/*", "abstract digital art"),
        ("*/mate/desktop/*", "desktop graphics and gradients"),
    ),
}
PAINTING = re.compile(r"\bpainting", re.IGNORECASE)  # in an upstream Source/Comment: not a photo

# scikit-image's bundled natural colour photos, by loader name -> file in skimage/data. Each is
# used only if its loader's docstring states a licence (checked at run time). Left out:
# motorcycle_left (its docstring states no licence), hubble_deep_field, retina and the
# microscopy images (not natural scenes), and the grayscale or synthetic ones.
SKIMAGE_PHOTOS = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png",
                  "rocket": "rocket.jpg"}


@dataclass(frozen=True)
class Candidate:
    """One raster file that may be a photo."""

    source: str  # package name, or "scikit-image"
    version: str
    original_path: str  # path in the package; "<rcc path>:<entry path>" inside a resource file
    licence: dict[str, str]  # licence, licence_from, copyright, source_url, debian_licence, ...
    load: Callable[[], bytes] = field(repr=False, compare=False)
    excluded: str = ""  # why a source rule excludes it; "" = judge it by its pixels


@dataclass(frozen=True)
class ExtractedPackage:
    name: str
    version: str
    root: Path  # the unpacked tree (usr/...)


def require_debian_tools() -> None:
    for tool in ("apt-get", "dpkg", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"{tool} is not available on this machine: fetching photos needs Debian/Ubuntu's "
                            "apt-get and dpkg; train with --data DIR pointing at any folder of images instead")


def _run(command: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise DataError(f"`{' '.join(command)}` failed (exit {result.returncode}): {last}; run "
                        "`apt-get update` first if the package is unknown, or train with --data DIR "
                        "pointing at any folder of images instead")
    return result.stdout


def download_and_extract(package: str, cache_dir: str | Path) -> ExtractedPackage:
    """``apt-get download`` the package's .deb into the cache and unpack it with ``dpkg -x``.

    A .deb already in the cache is reused (so a second run works offline), as is its unpacked tree.
    """
    debs = Path(cache_dir) / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        _run(["apt-get", "download", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            raise DataError(f"apt-get download {package} reported success but left no .deb in {debs}")
    deb = found[-1]
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    root = Path(cache_dir) / "extracted" / package / version.replace(":", "%3a")
    marker = root / ".cicm-extracted"  # written last: a half-unpacked tree is redone
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _run(["dpkg", "-x", str(deb), str(root)])
        marker.write_text(deb.name + "\n")
    return ExtractedPackage(package, version, root)


def _licence_record(debian: LicenceInfo, upstream: LicenceInfo | None, upstream_from: str) -> dict[str, str]:
    chosen = upstream or debian
    source_url = chosen.source or next(iter(re.findall(r"https?://\S+", chosen.comment)), "")
    return {
        "licence": normalise_licence(chosen.licence),
        "licence_as_written": chosen.licence,
        "licence_from": upstream_from if upstream else f"debian copyright ({debian.scope})",
        # the package-wide stanza lists every contributor: point to the file instead
        "copyright": chosen.copyright if chosen.scope != "package" else "see the package's copyright file",
        "source_url": source_url,
        "debian_licence": debian.licence,
        "debian_licence_scope": debian.scope,
    }


def _exclusion(package: str, original_path: str, upstream: LicenceInfo | None) -> str:
    for pattern, why in NOT_PHOTOS.get(package, ()):
        if fnmatchcase(original_path, pattern):
            return why
    if upstream is not None and PAINTING.search(f"{upstream.source} {upstream.comment}"):
        return "a painting (per the upstream README)"
    return ""


def _desktop_sidecar(path: Path) -> LicenceInfo | None:
    """Palapeli's puzzle ``NAME.desktop`` next to ``NAME.jpg`` names the photo's author and licence."""
    sidecar = path.with_suffix(".desktop")
    if not sidecar.is_file():
        return None
    keys = dict(line.split("=", 1) for line in sidecar.read_text(errors="replace").splitlines() if "=" in line)
    licence = keys.get("X-KDE-PluginInfo-License", "").strip()
    if not licence:
        return None
    return LicenceInfo(licence, keys.get("X-KDE-PluginInfo-Author", "").strip(), "file",
                       keys.get("X-KDE-PluginInfo-Website", "").strip())


def debian_candidates(package: ExtractedPackage) -> list[Candidate]:
    """Every raster file of an unpacked package, those inside .rcc files included, sorted."""
    copyright_file = CopyrightFile.for_package(package.root, package.name)
    candidates: list[Candidate] = []
    for path in sorted(p for p in package.root.rglob("*") if p.is_file()):
        relative = path.relative_to(package.root).as_posix()
        if relative.startswith(SKIPPED_TREES):
            continue
        if path.suffix.lower() == ".rcc":
            candidates.extend(_rcc_candidates(package, path, relative, copyright_file))
        elif path.suffix.lower() in RASTER_SUFFIXES:
            upstream = _desktop_sidecar(path)
            candidates.append(Candidate(
                package.name, package.version, relative,
                _licence_record(copyright_file.licence_for(relative), upstream, "upstream .desktop sidecar"),
                load=path.read_bytes, excluded=_exclusion(package.name, relative, upstream)))
    return candidates


def _rcc_candidates(package: ExtractedPackage, path: Path, relative: str,
                    copyright_file: CopyrightFile) -> list[Candidate]:
    archive = RccArchive.open(path)
    readmes = {entry.path.rsplit("/", 1)[0] if "/" in entry.path else "":
               parse_stanzas(archive.read(entry).decode("utf-8", errors="replace"))
               for entry in archive.entries if entry.path.rsplit("/", 1)[-1] in README_NAMES}
    candidates = []
    for entry in archive.entries:
        if not entry.path.lower().endswith(RASTER_SUFFIXES):
            continue
        found = readme_licence(readmes, entry.path)
        folder, upstream = found if found else ("", None)
        original = f"{relative}:{entry.path}"
        record = _licence_record(copyright_file.licence_for(entry.path), upstream,
                                 f"upstream README {folder + '/' if folder else ''}README in {path.name}")
        candidates.append(Candidate(
            package.name, package.version, original, record,
            load=lambda archive=archive, entry=entry: archive.read(entry),
            excluded=_exclusion(package.name, original, upstream)))
    return candidates


def _docstring_licence(doc: str) -> tuple[str, str] | None:
    """(licence, the docstring's words about it) from a skimage.data loader docstring, or None."""
    lines = [line.strip() for line in doc.splitlines()
             if re.search(r"CC0|public domain|copyright", line, re.IGNORECASE)]
    if not lines:
        return None
    text = " ".join(lines)
    if "CC0" in text:
        return "CC0-1.0", text
    if re.search(r"public domain|no (known )?copyright restrictions", text, re.IGNORECASE):
        return "public-domain", text
    return None


def skimage_candidates() -> list[Candidate]:
    """scikit-image's bundled natural colour photos whose docstring states a licence ([] without skimage)."""
    try:
        import skimage
        import skimage.data
    except ImportError:
        return []
    folder = Path(skimage.data.__file__).parent
    candidates = []
    for name, filename in sorted(SKIMAGE_PHOTOS.items()):
        loader = getattr(skimage.data, name, None)
        licence = _docstring_licence(inspect.getdoc(loader) or "") if loader is not None else None
        path = folder / filename
        if licence is None or not path.is_file():
            continue
        record = {"licence": licence[0], "licence_as_written": licence[1],
                  "licence_from": f"docstring of skimage.data.{name}", "copyright": "", "source_url": "",
                  "debian_licence": "", "debian_licence_scope": ""}
        candidates.append(Candidate(SKIMAGE_SOURCE, skimage.__version__, f"skimage/data/{filename}", record,
                                    load=path.read_bytes))
    return candidates


def short_name(original_path: str) -> str:
    """A readable, unique file stem: the original stem plus 8 hex digits of the path's sha1."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", original_path.rsplit("/", 1)[-1].rsplit(".", 1)[0])[:60]
    return f"{stem}-{hashlib.sha1(original_path.encode('utf-8')).hexdigest()[:8]}"
