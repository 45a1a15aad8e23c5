"""The .rcc reader against files written by a small writer (tests/train/conftest.py)."""

from __future__ import annotations

import pytest

from cicm_deploy.train import rcc
from cicm_deploy.train.rcc import RccArchive, RccError

FILES = {
    "top.txt": b"plain bytes at the top",
    "images/photo.webp": bytes(range(256)) * 40,
    "images/nested/deep/readme": "über ünïcode name payload".encode(),
    "images/nested/zlib.bin": b"compress me " * 500,
    "ünï/名前.png": b"\x89PNG not really",
}
ZLIB = frozenset({"images/nested/zlib.bin", "top.txt"})


@pytest.mark.parametrize("version", [1, 2, 3])
def test_lists_full_paths_and_returns_exact_bytes(make_rcc, version):
    archive = RccArchive(make_rcc(FILES, version=version, zlib_paths=ZLIB), "test.rcc")
    assert archive.version == version
    assert archive.paths() == sorted(FILES)
    for path, content in FILES.items():
        assert archive.read(path) == content
    assert archive.find("images/nested/zlib.bin").compression == "zlib"
    assert archive.find("images/photo.webp").compression == "none"
    assert archive.find(":/images/photo.webp").path == "images/photo.webp"  # Qt's spelling works too


def test_version_2_keeps_last_modified(make_rcc):
    v1 = RccArchive(make_rcc(FILES, version=1))
    v2 = RccArchive(make_rcc(FILES, version=2, modified_ms=1234567890123))
    assert {e.last_modified_ms for e in v1.entries} == {0}
    assert {e.last_modified_ms for e in v2.entries} == {1234567890123}


def test_open_from_disk(make_rcc, tmp_path):
    path = tmp_path / "a.rcc"
    path.write_bytes(make_rcc(FILES, version=2, zlib_paths=ZLIB))
    assert RccArchive.open(path).read("images/nested/zlib.bin") == FILES["images/nested/zlib.bin"]
    with pytest.raises(RccError, match="does not exist"):
        RccArchive.open(tmp_path / "missing.rcc")


def test_zstd_entry_says_it_is_unsupported_without_a_module(make_rcc, monkeypatch):
    monkeypatch.setattr(rcc, "_zstd_decompress_function", lambda: None)
    archive = RccArchive(make_rcc({"a.png": b"not really zstd"}, version=3, zstd_paths=frozenset({"a.png"})))
    assert archive.entries[0].compression == "zstd"
    with pytest.raises(RccError, match="zstd-compressed.*zstandard"):
        archive.read("a.png")


def test_bad_magic_truncation_and_unknown_version(make_rcc):
    with pytest.raises(RccError, match="magic 'qres'"):
        RccArchive(b"PK\x03\x04" + bytes(40))
    blob = make_rcc(FILES, version=2)
    with pytest.raises(RccError, match="truncated or corrupt"):
        RccArchive(blob[:-10])
    with pytest.raises(RccError, match="version 9"):
        RccArchive(blob[:4] + (9).to_bytes(4, "big") + blob[8:])


def test_corrupt_zlib_payload_is_an_rcc_error(make_rcc):
    blob = bytearray(make_rcc({"z.bin": b"x" * 100}, version=2, zlib_paths=frozenset({"z.bin"})))
    archive = RccArchive(bytes(blob))
    start = archive.entries[0].data_offset + 4 + 4  # size, uncompressed length, then the stream
    blob[start:start + 4] = b"\xff\xff\xff\xff"
    with pytest.raises(RccError, match="zlib"):
        RccArchive(bytes(blob)).read("z.bin")

