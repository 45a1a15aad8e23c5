"""The photo set pipeline on a fake unpacked package (no apt-get, no network), licences, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cicm_deploy.train import photo_fetch, photo_sources
from cicm_deploy.train.data import DataError
from cicm_deploy.train.data_cli import data
from cicm_deploy.train.debian_copyright import CopyrightFile, normalise_licence, parse_stanzas, readme_licence
from cicm_deploy.train.photo_sources import ExtractedPackage

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2020 Everyone
License: GPL-2+

Files: nature/photo*.jpg
Copyright: 2021 A. Photographer
License: CC-BY-SA-4.0

Files: nature/drawing.png
Copyright: 2021 An Artist
License: CC0-1.0

License: GPL-2+
 The licence text, indented.
 .
 More text.
"""

README = """\
Copyright: Someone
License: CC-BY 2.0
Source: https://example.org/original.jpg
Files:
animals/cat.webp

Copyright: Another
License: Public Domain
dog.webp
Comment: README quirk: no Files: line, names follow the licence
"""


def test_copyright_resolves_files_by_path_tail_and_falls_back_to_the_package():
    copyright_file = CopyrightFile(parse_stanzas(COPYRIGHT), "mate-backgrounds")
    photo = copyright_file.licence_for("usr/share/backgrounds/mate/nature/photo1.jpg")
    assert (photo.licence, photo.copyright, photo.scope) == ("CC-BY-SA-4.0", "2021 A. Photographer", "file")
    converted = copyright_file.licence_for("usr/share/x/nature/drawing.webp")  # png in the source, webp installed
    assert (converted.licence, converted.scope) == ("CC0-1.0", "file")
    other = copyright_file.licence_for("usr/share/backgrounds/mate/elsewhere/z.jpg")
    assert (other.licence, other.scope) == ("GPL-2+", "package")


def test_upstream_readme_stanzas_and_licence_names():
    readmes = {"res": parse_stanzas(README)}
    folder, cat = readme_licence(readmes, "res/animals/cat.webp")
    assert folder == "res" and cat.licence == "CC-BY 2.0" and cat.source == "https://example.org/original.jpg"
    assert readme_licence(readmes, "res/dog.webp")[1].licence == "Public Domain"
    assert readme_licence(readmes, "res/animals/dog.webp") is None
    assert [normalise_licence(n) for n in ("CC-BY 2.0", "Public Domain", "GPLv3 or later", "CC0-1.0")] == [
        "CC-BY-2.0", "public-domain", "GPL-3+", "CC0-1.0"]


def fake_package(root, rng, make_photo, make_drawing, make_rcc) -> ExtractedPackage:
    """An unpacked 'mate-backgrounds' with a photo, its resized copy, a drawing, an icon, an
    excluded folder, and an .rcc holding one more photo and an upstream README."""
    (root / "usr/share/doc/mate-backgrounds").mkdir(parents=True)
    (root / "usr/share/doc/mate-backgrounds/copyright").write_text(COPYRIGHT)
    nature = root / "usr/share/backgrounds/mate/nature"
    nature.mkdir(parents=True)
    photo = make_photo(rng)
    Image.fromarray(photo).save(nature / "photo1.jpg", quality=95)
    Image.fromarray(photo).resize((290, 272)).save(nature / "photo2_copy.png")
    Image.fromarray(make_drawing()).save(nature / "drawing.png")
    Image.fromarray(make_photo(rng, 48, 48)).save(nature / "icon.png")
    (root / "usr/share/backgrounds/mate/abstract").mkdir()
    Image.fromarray(make_photo(rng)).save(root / "usr/share/backgrounds/mate/abstract/art.jpg")
    webp = root / "tmp.webp"
    Image.fromarray(make_photo(np.random.default_rng(5), 280, 300)).save(webp, lossless=True)
    rcc = make_rcc({"res/animals/cat.webp": webp.read_bytes(), "res/README": README.encode()}, version=3)
    webp.unlink()
    (root / "usr/share/pkg").mkdir()
    (root / "usr/share/pkg/data.rcc").write_bytes(rcc)
    return ExtractedPackage("mate-backgrounds", "1.0-1", root)


@pytest.fixture
def offline(monkeypatch, tmp_path, rng, make_photo, make_drawing, make_rcc):
    """fetch_photos wired to the fake package instead of apt-get."""
    package = fake_package(tmp_path / "pkg", rng, make_photo, make_drawing, make_rcc)
    monkeypatch.setattr(photo_fetch, "require_debian_tools", lambda: None)
    monkeypatch.setattr(photo_fetch, "download_and_extract", lambda name, cache: package)
    return package


def test_fetch_keeps_photos_drops_the_rest_and_writes_a_manifest(offline, tmp_path):
    dest = tmp_path / "photos"
    summary = photo_fetch.fetch_photos(dest, tmp_path / "cache", sources=("mate-backgrounds",),
                                       include_skimage=False, progress=False)
    manifest = json.loads(summary.manifest.read_text())
    kept = {p["original_path"]: p for p in manifest["photos"]}
    assert sorted(kept) == ["usr/share/backgrounds/mate/nature/photo1.jpg",
                            "usr/share/pkg/data.rcc:res/animals/cat.webp"]
    reasons = {r["original_path"].rsplit("/", 1)[-1]: r["reason"] for r in manifest["rejected"]}
    assert reasons["photo2_copy.png"].startswith("duplicate")
    assert reasons["drawing.png"].startswith(("flat colour fills", "few colours"))
    assert reasons["icon.png"].startswith("too small")
    assert reasons["art.jpg"].startswith("excluded by source rule")
    jpeg = kept["usr/share/backgrounds/mate/nature/photo1.jpg"]
    assert jpeg["file"].endswith(".jpg") and jpeg["licence"] == "CC-BY-SA-4.0" and jpeg["version"] == "1.0-1"
    original = offline.root / "usr/share/backgrounds/mate/nature/photo1.jpg"
    assert (dest / jpeg["file"]).read_bytes() == original.read_bytes()  # copied, not re-encoded
    cat = kept["usr/share/pkg/data.rcc:res/animals/cat.webp"]
    assert cat["file"].endswith(".png") and cat["licence"] == "CC-BY-2.0"
    assert cat["licence_from"].startswith("upstream README") and cat["debian_licence_scope"] == "package"
    assert (cat["width"], cat["height"]) == (300, 280)
    assert summary.total == 2 and summary.sources["mate-backgrounds"].kept == 2


def test_fetch_is_deterministic_and_removes_stale_files(offline, tmp_path):
    dest = tmp_path / "photos"
    first = photo_fetch.fetch_photos(dest, tmp_path / "c", sources=("mate-backgrounds",),
                                     include_skimage=False, progress=False).manifest.read_bytes()
    stale = dest / "mate-backgrounds" / "old-00000000.png"
    stale.write_bytes(b"x")
    manifest = json.loads(first)
    manifest["photos"].append({"file": "mate-backgrounds/old-00000000.png"})
    (dest / "manifest.json").write_text(json.dumps(manifest))
    second = photo_fetch.fetch_photos(dest, tmp_path / "c", sources=("mate-backgrounds",),
                                      include_skimage=False, progress=False).manifest.read_bytes()
    assert first == second and not stale.exists()


def test_missing_apt_get_and_foreign_packages_are_data_errors(monkeypatch, tmp_path):
    monkeypatch.setattr(photo_sources.shutil, "which", lambda tool: None)
    with pytest.raises(DataError, match="apt-get is not available.*--data DIR"):
        photo_fetch.fetch_photos(tmp_path / "d", tmp_path / "c", progress=False)
    with pytest.raises(DataError, match="not training sources.*independent evaluation"):
        photo_fetch.fetch_photos(tmp_path / "d", tmp_path / "c", sources=("ubuntu-wallpapers",))


def test_skimage_docstring_licences():
    assert photo_sources._docstring_licence("No copyright restrictions.  CC0 by the photographer.")[0] == "CC0-1.0"
    assert photo_sources._docstring_licence("No known copyright restrictions, released into the public domain.")[0] \
        == "public-domain"
    assert photo_sources._docstring_licence("Rectified stereo image pair with ground-truth disparities.") is None


def test_cli_prints_a_summary_and_turns_data_errors_into_user_errors(offline, tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(data, ["fetch", str(tmp_path / "out"), "--cache", str(tmp_path / "c"), "--skip-skimage"])
    assert result.exit_code == 0, result.output
    assert "mate-backgrounds" in result.output and "manifest:" in result.output

    def no_apt(*args, **kwargs):
        raise DataError("apt-get is not available on this machine; train with --data DIR")

    monkeypatch.setattr(photo_fetch, "fetch_photos", no_apt)
    result = runner.invoke(data, ["fetch", str(tmp_path / "out2")])
    assert result.exit_code == 2
    assert "apt-get is not available" in result.output and "Traceback" not in result.output
