"""The `facades` task (pix2pix CMP facades): downloaded once into the genlab cache, verified, then read as A|B pairs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from genlab.cache import cache_dir, fetch_file, record_sha256, safe_extract
from genlab.config import DataConfig
from genlab.data.base import ImageSplit, Task
from genlab.utils import GenlabError

FACADES_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz"
FACADES_URL_ENV = "GENLAB_FACADES_URL"  # overrides FACADES_URL (mirrors, tests)


def facades_url() -> str:
    """The facades archive URL: `$GENLAB_FACADES_URL` when set, else the pix2pix authors' server."""
    return os.environ.get(FACADES_URL_ENV) or FACADES_URL


def facades_archive() -> Path:
    """Where the facades archive is cached."""
    return cache_dir() / "facades.tar.gz"


def facades_folder() -> Path:
    """Where the facades archive is extracted (train/val/test A|B JPEGs)."""
    return cache_dir() / "facades"


def facades_available(config: DataConfig) -> bool:
    """True when the facades archive or its extracted folder is in the cache (no download needed)."""
    return facades_archive().is_file() or (facades_folder() / "train").is_dir()


def prepare_facades() -> Path:
    """Download (once) and extract (once) the facades set; return the folder holding train/val/test."""
    folder = facades_folder()
    if (folder / "train").is_dir():
        return folder
    archive = fetch_file(
        facades_url(), facades_archive(), description="facades.tar.gz (pix2pix facades, ~30 MB)", record=False
    )
    staging = cache_dir() / ".facades-extracted"
    safe_extract(archive, staging)
    # Recorded only now: a corrupt archive (downloaded or put by hand) must not become the reference.
    record_sha256(archive)
    try:
        # The archive holds one top folder (facades/train, ...); accept a flat archive too.
        candidates = [staging] + sorted(child for child in staging.iterdir() if child.is_dir())
        root = next((candidate for candidate in candidates if (candidate / "train").is_dir()), None)
        if root is None:
            raise GenlabError(f"{archive}: no train/ folder inside; not the pix2pix facades archive? delete it")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(root, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_facades_task(config: DataConfig) -> Task:
    """The pix2pix facades task: label map (source) -> photo (target), 400/100/106 pairs, downloaded once.

    The archive's A|B images hold the photo on the left and the label map on the right (pix2pix trains facades
    with --direction BtoA), so the halves are swapped here to make the label map the source.
    """
    from genlab.data import folders
    from genlab.data.facades_synth import facades_spec

    spec = facades_spec("facades", config.image_size)

    def load_split(split: str) -> ImageSplit:
        folder = prepare_facades()
        return folders.load_aligned_split(
            folder,
            split,
            size=config.image_size,
            skip_bad_files=config.skip_bad_files,
            swap_halves=True,
            channels=3,
            nearest_source=True,  # label maps: no blended colours at class borders
        )

    return Task(spec, load_split, config)
