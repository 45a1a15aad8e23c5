"""Helpers for the data tests: a tiny Qt .rcc writer and synthetic photo-like / drawing images."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest


def qt_hash(name: str) -> int:
    """Qt's qt_hash over UTF-16 code units (the hash rcc stores with each name)."""
    h = 0
    raw = name.encode("utf-16-be")
    for i in range(0, len(raw), 2):
        h = ((h << 4) + int.from_bytes(raw[i:i + 2], "big")) & 0xFFFFFFFF
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


def build_rcc(files: dict[str, bytes], version: int = 2, zlib_paths: frozenset[str] = frozenset(),
              zstd_paths: frozenset[str] = frozenset(), modified_ms: int = 1_700_000_000_000) -> bytes:
    """An .rcc holding ``files`` ("a/b/c.png" -> bytes): header, data, names, tree, as rcc lays them out."""
    tree: dict = {}
    for path in files:
        node = tree
        *folders, leaf = path.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[leaf] = path

    names = bytearray()
    name_offsets: dict[str, int] = {}

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            names.extend(struct.pack(">HI", len(name.encode("utf-16-be")) // 2, qt_hash(name)))
            names.extend(name.encode("utf-16-be"))
        return name_offsets[name]

    data = bytearray()
    data_offsets: dict[str, int] = {}
    for path, content in sorted(files.items()):
        payload = content
        if path in zlib_paths:
            payload = struct.pack(">I", len(content)) + zlib.compress(content)
        data_offsets[path] = len(data)
        data.extend(struct.pack(">I", len(payload)) + payload)

    # nodes in breadth-first order, each directory's children contiguous and sorted by hash
    nodes: list[tuple[str, object]] = [("", tree)]
    first_child: dict[int, int] = {}
    index = 0
    while index < len(nodes):
        _, content = nodes[index]
        if isinstance(content, dict):
            first_child[index] = len(nodes)
            nodes.extend(sorted(content.items(), key=lambda item: qt_hash(item[0])))
        index += 1
    tree_bytes = bytearray()
    for i, (name, content) in enumerate(nodes):
        offset = name_offset(name) if i else 0
        if isinstance(content, dict):
            tree_bytes.extend(struct.pack(">IHII", offset, 0x02, len(content), first_child[i]))
        else:
            flags = 0x01 if content in zlib_paths else 0x04 if content in zstd_paths else 0
            tree_bytes.extend(struct.pack(">IHHHI", offset, flags, 0, 1, data_offsets[content]))
        if version >= 2:
            tree_bytes.extend(struct.pack(">Q", 0 if isinstance(content, dict) else modified_ms))

    header_size = 24 if version >= 3 else 20
    data_start = header_size
    names_start = data_start + len(data)
    tree_start = names_start + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_start, data_start, names_start)
    if version >= 3:
        header += struct.pack(">I", 0x04 if zstd_paths else 0x01 if zlib_paths else 0)
    return header + bytes(data) + bytes(names) + bytes(tree_bytes)


def photo_like(rng: np.random.Generator, height: int = 300, width: int = 320) -> np.ndarray:
    """A colourful, textured, noisy image: what the photo filter should keep."""
    yy, xx = np.mgrid[0:height, 0:width] / 40.0
    base = np.stack([np.sin(xx) * np.cos(yy * 0.7), np.cos(xx * 0.6 + yy), np.sin((xx + yy) * 0.5)], axis=2)
    texture = rng.normal(0, 0.25, (height // 4 + 1, width // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:height, :width]
    noise = rng.normal(0, 0.04, base.shape)
    return np.clip((0.5 + 0.3 * base + 0.2 * texture + noise) * 255, 0, 255).astype(np.uint8)


def flat_drawing(height: int = 300, width: int = 320) -> np.ndarray:
    """A cartoon-like image: a few flat colour shapes on a white background."""
    image = np.full((height, width, 3), 255, np.uint8)
    image[30:150, 40:200] = (220, 40, 40)
    image[120:260, 150:300] = (40, 90, 200)
    yy, xx = np.mgrid[0:height, 0:width]
    image[(yy - 220) ** 2 + (xx - 80) ** 2 < 50**2] = (250, 210, 30)
    return image


@pytest.fixture
def make_rcc():
    return build_rcc


@pytest.fixture
def make_photo():
    return photo_like


@pytest.fixture
def make_drawing():
    return flat_drawing
