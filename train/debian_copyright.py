"""Which licence a packaged file is under, from DEP-5 style ``Files:`` / ``License:`` stanzas.

Two sources use this format:

* the Debian package's ``usr/share/doc/PKG/copyright`` (DEP-5: ``Files:`` glob patterns with
  ``Copyright:`` and ``License:``; the last stanza whose pattern matches a file applies);
* upstream ``README`` files next to the images (GCompris ships one per resource folder inside its
  ``.rcc`` files, with ``Source:`` and ``Comment:`` too), whose patterns are relative to the
  README's folder. They are looser: continuation lines are not always indented and ``Files:`` is
  sometimes missing, the file names simply following the ``License:`` line.

Debian's patterns name paths in the *source* tree, while we hold *installed* paths
(``usr/share/backgrounds/x.jpg`` for ``16.04/x.jpg``) or paths inside a Qt resource file
(``gcompris/src/activities/a/b.webp`` for ``src/activities/a/b.jpg``, converted at build time).
So ``CopyrightFile.licence_for`` resolves a file in three tiers, the first that answers wins:

1. ``file``: a stanza pattern matches a trailing part of the path (last match wins, as in DEP-5),
   image extensions ignored when the pattern names one (jpg -> webp conversions);
2. ``basename``: a pattern without wildcards names the same file name;
3. ``package``: the ``Files: *`` stanza, the whole package's licence.

The tier is recorded with the licence so that a reader knows how sure the attribution is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

IMAGE_EXTENSION = re.compile(r"\.(jpe?g|png|webp|svgz?|bmp|gif|tiff?)$", re.IGNORECASE)
FIELD_LINE = re.compile(r"^([A-Za-z][A-Za-z-]*):\s*(.*)$")


@dataclass(frozen=True)
class FilesStanza:
    patterns: tuple[str, ...]
    licence: str  # the License field's short name, e.g. "CC-BY-SA-4.0"
    copyright: str = ""
    source: str = ""  # where the original came from (upstream READMEs)
    comment: str = ""


@dataclass(frozen=True)
class LicenceInfo:
    licence: str
    copyright: str
    scope: str  # "file", "basename" or "package" (see the module docstring)
    source: str = ""
    comment: str = ""


def parse_stanzas(text: str) -> list[FilesStanza]:
    """The stanzas that name files and a licence, in file order (licence texts are skipped)."""
    stanzas: list[FilesStanza] = []
    for block in re.split(r"\n[ \t]*\n", text):
        fields, files = _fields_and_files(block)
        licence = next((line for line in fields.get("license", "").splitlines() if line.strip()), "")
        if files and licence:
            stanzas.append(FilesStanza(
                patterns=tuple(files), licence=licence.strip(),
                copyright=_one_line(fields.get("copyright", "")),
                source=_one_line(fields.get("source", "")), comment=_one_line(fields.get("comment", ""))))
    return stanzas


def normalise_licence(name: str) -> str:
    """One spelling for the licence names found upstream: "CC-BY-SA 4.0" -> "CC-BY-SA-4.0",
    "Public Domain" -> "public-domain", "GPLv3 or later" -> "GPL-3+", "GNU-FDL" -> "GFDL"."""
    text = " ".join(name.split())
    if re.fullmatch(r"public[ -]domain\.?", text, re.IGNORECASE):
        return "public-domain"
    gpl = re.fullmatch(r"(?:GNU[ -])?GPL[ -]?v?(\d)(?:\.0)?(\+| or later)?", text, re.IGNORECASE)
    if gpl:
        return f"GPL-{gpl.group(1)}{'+' if gpl.group(2) else ''}"
    if re.fullmatch(r"(?:GNU[ -])?G?FDL", text, re.IGNORECASE):
        return "GFDL"
    cc = re.fullmatch(r"CC[ -](BY(?:[ -](?:SA|NC|ND))*)[ -]v?(\d\.\d)", text, re.IGNORECASE)
    if cc:
        return f"CC-{cc.group(1).upper().replace(' ', '-')}-{cc.group(2)}"
    return text


def _one_line(value: str) -> str:
    return " / ".join(line.strip() for line in value.splitlines() if line.strip() not in ("", "."))


def _fields_and_files(block: str) -> tuple[dict[str, str], list[str]]:
    """Fields of one stanza (lower-case names) and the file patterns it lists."""
    fields: dict[str, str] = {}
    files: list[str] = []
    current: str | None = None
    for line in block.splitlines():
        indented = line[:1] in (" ", "\t")
        match = None if indented else FIELD_LINE.match(line)
        if match:
            current = match.group(1).lower()
            if current == "files":
                files.extend(match.group(2).split())
            else:
                fields[current] = match.group(2).strip()
        elif current == "files":
            files.extend(line.split())
        elif indented and current is not None:
            fields[current] += "\n" + line.strip()
        elif line.strip() and current is not None:
            # README quirk: file names right after "License: X" with no "Files:" line
            current = "files"
            files.extend(line.split())
    return fields, files


def _strip_image_extension(path: str) -> str:
    return IMAGE_EXTENSION.sub("", path)


def _pattern_matches(pattern: str, path: str) -> bool:
    if fnmatchcase(path, pattern):
        return True
    # images converted at build time (foo.jpg in the source, foo.webp installed)
    return bool(IMAGE_EXTENSION.search(pattern)) and fnmatchcase(
        _strip_image_extension(path), _strip_image_extension(pattern))


def _matches_tail(pattern: str, path: str) -> bool:
    parts = path.split("/")
    return any(_pattern_matches(pattern, "/".join(parts[i:])) for i in range(len(parts)))


def _names_basename(pattern: str, path: str) -> bool:
    if any(char in pattern for char in "*?["):
        return False
    return _strip_image_extension(pattern.rsplit("/", 1)[-1]) == _strip_image_extension(path.rsplit("/", 1)[-1])


class CopyrightFile:
    """A package's parsed copyright file; ``licence_for(path)`` resolves one file."""

    def __init__(self, stanzas: list[FilesStanza], package: str) -> None:
        self.package = package
        self.stanzas = stanzas
        defaults = [s for s in stanzas if "*" in s.patterns]
        self._default = defaults[0] if defaults else None

    @classmethod
    def for_package(cls, root: str | os.PathLike, package: str) -> CopyrightFile:
        """Read ``usr/share/doc/PACKAGE/copyright`` under an extracted package ``root``."""
        path = Path(root) / "usr" / "share" / "doc" / package / "copyright"
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        return cls(parse_stanzas(text), package)

    def licence_for(self, path: str) -> LicenceInfo:
        path = path.lstrip("/")
        specific = [s for s in self.stanzas if s is not self._default]
        for tier, test in (("file", _matches_tail), ("basename", _names_basename)):
            found = [s for s in specific if any(test(p, path) for p in s.patterns if p != "*")]
            if found:
                stanza = found[-1]  # DEP-5: the last matching stanza wins
                return LicenceInfo(stanza.licence, stanza.copyright, tier, stanza.source, stanza.comment)
        if self._default is not None:
            return LicenceInfo(self._default.licence, self._default.copyright, "package")
        return LicenceInfo("unknown (the copyright file has no Files: * stanza)", "", "package")


def readme_licence(readmes: dict[str, list[FilesStanza]], path: str) -> tuple[str, LicenceInfo] | None:
    """The upstream README stanza naming ``path``: (README folder, licence), or None.

    ``readmes`` maps a folder ("a/b", "" for the top) to the stanzas of the README in it. The
    nearest README wins; its patterns are relative to its folder.
    """
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    while True:
        relative = path[len(folder) + 1:] if folder else path
        for stanza in reversed(readmes.get(folder, [])):  # last match wins, as in DEP-5
            if any(_pattern_matches(pattern, relative) for pattern in stanza.patterns):
                return folder, LicenceInfo(stanza.licence, stanza.copyright, "file", stanza.source,
                                           stanza.comment)
        if not folder:
            return None
        folder = folder.rsplit("/", 1)[0] if "/" in folder else ""
