"""Shared fixtures: the real WorldClim rasters and a store built from them once per session.

Tests read the real rasters in ../shared (or $WORLDCLIM_DIR); a missing copy is a failure, not a
skip, so a green run always means the data path was exercised.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORLDCLIM_DIR = REPO_ROOT.parent / "shared" / "worldclim" / "wc2.1_10m_bio"
REAL_STORE_N_TRAIN = 60_000


@pytest.fixture(scope="session")
def worldclim_dir() -> Path:
    """The folder holding the 19 real GeoTIFFs: $WORLDCLIM_DIR, else ../shared/worldclim/wc2.1_10m_bio."""
    env = os.environ.get("WORLDCLIM_DIR")
    folder = Path(env).expanduser().resolve() if env else DEFAULT_WORLDCLIM_DIR.resolve()
    if not (folder / "wc2.1_10m_bio_1.tif").is_file():
        origin = "environment variable WORLDCLIM_DIR" if env else f"default location {DEFAULT_WORLDCLIM_DIR}"
        pytest.fail(
            f"WorldClim rasters not found in {folder} (from the {origin}). Set WORLDCLIM_DIR to a folder "
            "holding wc2.1_10m_bio_1.tif ... wc2.1_10m_bio_19.tif (e.g. ../shared/worldclim/wc2.1_10m_bio).",
            pytrace=False,
        )
    return folder


@pytest.fixture(scope="session")
def store_settings() -> dict:
    """The default (config.yaml) store settings with a smaller training sample, for speed."""
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    return {**config["store"], "n_train": REAL_STORE_N_TRAIN}


@pytest.fixture(scope="session")
def real_store(worldclim_dir: Path, store_settings: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Zarr store built from the real rasters (n_train=60000, other settings as in config.yaml)."""
    from spectral_collapse.store import build_store
    from spectral_collapse.worldclim import verify_folder

    checksums = verify_folder(worldclim_dir)
    path = tmp_path_factory.mktemp("store") / "worldclim.zarr"
    build_store(worldclim_dir, path, store_settings, sha256=checksums)
    return path
