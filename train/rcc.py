"""Read Qt binary resource files (``.rcc``, magic ``qres``): list the entries, return their bytes.

Written from the format's description (Qt's ``rcc`` tool writes it, ``QResource`` reads it). All
integers are big-endian. Layout:

* header: ``qres``, version (u32: 1, 2 or 3), tree offset, data offset, names offset (u32 each),
  and in version 3 a u32 of overall flags (which compressions the file uses);
* tree: a table of fixed-size nodes, node 0 the root directory. A node is 14 bytes in version 1,
  22 in version 2+ (an extra u64 last-modified time, ms since the epoch):
  name offset (u32), flags (u16), then either child count (u32) + index of the first child (u32)
  for a directory (flag 0x02), or territory (u16) + language (u16) + data offset (u32) for a file;
* names: at ``names offset + name offset``: length in UTF-16 units (u16), a hash (u32, used by Qt
  for binary search, ignored here), then the name in UTF-16BE;
* data: at ``data offset + data offset of the file``: payload size (u32), then the payload. Flag
  0x01 = zlib (``qCompress``: u32 uncompressed size, then a zlib stream); flag 0x04 = zstd (a zstd
  frame; version 3 only).

zstd is decoded only where a zstd module is importable (``zstandard``, or Python 3.14's
``compression.zstd``); it is not a dependency. No torch, no Qt.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

RCC_MAGIC = b"qres"
SUPPORTED_VERSIONS = (1, 2, 3)
FLAG_ZLIB = 0x01
FLAG_DIRECTORY = 0x02
FLAG_ZSTD = 0x04
HEADER_SIZE_V1_V2 = 20  # magic + 4 u32
HEADER_SIZE_V3 = 24  # ... + overall flags
NODE_SIZE_V1 = 14
NODE_SIZE_V2 = 22  # + u64 last modified
MAX_NODES = 1_000_000  # a guard against a corrupt tree that loops or claims absurd counts


class RccError(ValueError):
    """A file that is not a readable Qt resource file, or an entry that cannot be decoded."""


@dataclass(frozen=True)
class RccEntry:
    """One file inside an ``.rcc``: where its payload lives and how it is stored."""

    path: str  # "dir/sub/name.png", "/"-separated, no leading slash
    compression: str  # "none", "zlib" or "zstd"
    data_offset: int  # absolute offset of the u32 payload size in the rcc file
    stored_size: int  # payload bytes as stored (compressed size where compressed)
    territory: int  # QLocale territory (0 = any)
    language: int  # QLocale language (0 = any, 1 = C)
    last_modified_ms: int  # 0 in version 1 files, and where rcc was told not to record it


def zstd_decoder_available() -> bool:
    return _zstd_decompress_function() is not None


def _zstd_decompress_function():
    """A ``bytes -> bytes`` zstd decoder from an optional module, or None."""
    try:
        import zstandard  # type: ignore[import-not-found]

        # decompressobj copes with frames that do not record their content size
        return lambda payload: zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    except ImportError:
        pass
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14

        return zstd.decompress
    except ImportError:
        return None


class RccArchive:
    """An ``.rcc`` file parsed in memory: ``entries`` (sorted by path) and ``read(entry)``.

    The same path may appear more than once when a resource has locale variants; ``read(path)``
    then returns the first, ``entries`` lists them all.
    """

    def __init__(self, blob: bytes, name: str = "rcc data") -> None:
        self._blob = blob
        self.name = name
        if len(blob) < HEADER_SIZE_V1_V2 or blob[:4] != RCC_MAGIC:
            raise RccError(f"{name} is not a Qt resource file: expected the magic 'qres', "
                           f"found {blob[:4]!r}")
        self.version, self._tree, self._data, self._names = struct.unpack_from(">4I", blob, 4)
        if self.version not in SUPPORTED_VERSIONS:
            raise RccError(f"{name} is rcc format version {self.version}; this reader knows "
                           f"versions {', '.join(map(str, SUPPORTED_VERSIONS))}")
        self.overall_flags = 0
        if self.version >= 3:
            self.overall_flags = self._u32(HEADER_SIZE_V1_V2, "header flags")
        self._node_size = NODE_SIZE_V1 if self.version == 1 else NODE_SIZE_V2
        for what, offset in (("tree", self._tree), ("data", self._data), ("names", self._names)):
            if offset > len(blob):
                raise RccError(f"{name}: {what} offset {offset} lies past the end of the file "
                               f"({len(blob)} bytes); the file is truncated or corrupt")
        self.entries: list[RccEntry] = sorted(self._walk(), key=lambda e: e.path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> RccArchive:
        path = Path(path)
        if not path.is_file():
            raise RccError(f"{path} does not exist or is not a file; expected a Qt .rcc file")
        return cls(path.read_bytes(), str(path))

    # ---- low-level reads, each bounds-checked so that a corrupt file gives an RccError ----

    def _check(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or offset + size > len(self._blob):
            raise RccError(f"{self.name}: {what} at offset {offset} (+{size} bytes) lies past the "
                           f"end of the file ({len(self._blob)} bytes); it is truncated or corrupt")

    def _u32(self, offset: int, what: str) -> int:
        self._check(offset, 4, what)
        return struct.unpack_from(">I", self._blob, offset)[0]

    def _name(self, name_offset: int) -> str:
        start = self._names + name_offset
        self._check(start, 6, "a name header")
        length = struct.unpack_from(">H", self._blob, start)[0]  # in UTF-16 code units
        self._check(start + 6, 2 * length, "a name")
        raw = self._blob[start + 6:start + 6 + 2 * length]
        try:
            return raw.decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise RccError(f"{self.name}: a name at offset {start} is not valid UTF-16 ({exc})") from None

    def _node(self, index: int) -> tuple[int, int, int, int, int]:
        """(name offset, flags, a, b, last modified); a, b = (count, first) or (territory|language, data)."""
        offset = self._tree + index * self._node_size
        self._check(offset, self._node_size, f"tree node {index}")
        name_offset, flags = struct.unpack_from(">IH", self._blob, offset)
        if flags & FLAG_DIRECTORY:
            a, b = struct.unpack_from(">II", self._blob, offset + 6)
        else:
            territory, language, b = struct.unpack_from(">HHI", self._blob, offset + 6)
            a = (territory << 16) | language
        modified = struct.unpack_from(">Q", self._blob, offset + 14)[0] if self.version >= 2 else 0
        return name_offset, flags, a, b, modified

    # ---- the tree ----

    def _walk(self) -> list[RccEntry]:
        root_flags = self._node(0)[1]
        if not root_flags & FLAG_DIRECTORY:
            raise RccError(f"{self.name}: the root node is not a directory; the file is corrupt")
        entries: list[RccEntry] = []
        seen: set[int] = {0}
        stack: list[tuple[int, str]] = [(0, "")]  # (directory node index, its path)
        while stack:
            index, prefix = stack.pop()
            _, _, count, first, _ = self._node(index)
            if count > MAX_NODES or first + count > MAX_NODES:
                raise RccError(f"{self.name}: directory node {index} claims {count} children from "
                               f"node {first}; the file is corrupt")
            for child in range(first, first + count):
                if child in seen:  # a cycle: each node has exactly one parent in a valid file
                    raise RccError(f"{self.name}: tree node {child} is reached twice; the file is corrupt")
                seen.add(child)
                name_offset, flags, a, b, modified = self._node(child)
                path = f"{prefix}{self._name(name_offset)}"
                if flags & FLAG_DIRECTORY:
                    stack.append((child, path + "/"))
                    continue
                entries.append(self._file_entry(path, flags, a, b, modified))
        return entries

    def _file_entry(self, path: str, flags: int, locale: int, data_offset: int, modified: int) -> RccEntry:
        if flags & FLAG_ZSTD:
            compression = "zstd"
        elif flags & FLAG_ZLIB:
            compression = "zlib"
        else:
            compression = "none"
        absolute = self._data + data_offset
        stored = self._u32(absolute, f"the size of {path}")
        self._check(absolute + 4, stored, f"the data of {path}")
        return RccEntry(path=path, compression=compression, data_offset=absolute, stored_size=stored,
                        territory=locale >> 16, language=locale & 0xFFFF, last_modified_ms=modified)

    # ---- public reads ----

    def paths(self) -> list[str]:
        return [entry.path for entry in self.entries]

    def find(self, path: str) -> RccEntry:
        wanted = path.lstrip(":").lstrip("/")  # accept Qt's ":/dir/file" spelling too
        for entry in self.entries:
            if entry.path == wanted:
                return entry
        raise KeyError(f"{self.name} has no entry {path!r}")

    def read(self, entry: RccEntry | str) -> bytes:
        """The entry's bytes, decompressed."""
        if isinstance(entry, str):
            entry = self.find(entry)
        start = entry.data_offset + 4
        payload = self._blob[start:start + entry.stored_size]
        if entry.compression == "none":
            return payload
        if entry.compression == "zlib":
            return self._inflate(entry, payload)
        return self._unzstd(entry, payload)

    def _inflate(self, entry: RccEntry, payload: bytes) -> bytes:
        if len(payload) < 4:
            raise RccError(f"{self.name}: {entry.path} is marked zlib-compressed but holds only "
                           f"{len(payload)} bytes")
        expected = struct.unpack_from(">I", payload)[0]
        try:
            data = zlib.decompress(payload[4:])
        except zlib.error as exc:
            raise RccError(f"{self.name}: {entry.path} is not a valid zlib stream ({exc})") from None
        if len(data) != expected:
            raise RccError(f"{self.name}: {entry.path} inflated to {len(data)} bytes, its header "
                           f"says {expected}; the file is corrupt")
        return data

    def _unzstd(self, entry: RccEntry, payload: bytes) -> bytes:
        decompress = _zstd_decompress_function()
        if decompress is None:
            raise RccError(f"{self.name}: {entry.path} is zstd-compressed, which this reader supports "
                           "only when a zstd module is importable (pip install zstandard); "
                           "it is not a dependency of cicm-deploy")
        try:
            return decompress(payload)
        except Exception as exc:  # each zstd module has its own error class
            raise RccError(f"{self.name}: {entry.path} is not a valid zstd frame ({exc})") from None
