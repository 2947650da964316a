"""Where a config's data store lives: one folder per set of store settings (issue 23).

Why: presets differ in their store settings (the laptop's n_train is not CI's). With one shared path,
switching presets rebuilt, i.e. first deleted, the other preset's store and retrained everything after it.
Keyed by the hash of the settings, each preset has its own store and never touches another's.

A store built before this layout (results/data/worldclim.zarr) is kept where it is when its recorded
settings are this config's: moving it would change the input path of every training job, which
Snakemake's `input` rerun trigger would answer by retraining them all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from spectral_collapse.paths import DATA_ROOT, SOURCE_VERIFIED, VERIFIED
from spectral_collapse.provenance import config_hash

LEGACY_STORE = f"{DATA_ROOT}/worldclim.zarr"
LEGACY_DESCRIPTION = f"{DATA_ROOT}/worldclim_store.json"
# The settings a store's content depends on, as its description (worldclim_store.json) records them.
CONTENT_KEYS = ("n_train", "block_km", "heldout_fraction", "split_seed")


@dataclass(frozen=True)
class StorePaths:
    """The Zarr store and its description (the output of rule build_store)."""

    store: str
    description: str  # worldclim_store.json: what the store holds (rule build_store)
    verified: str = VERIFIED  # the data's verified record: WorldClim's checksums, or a source's own (rule hash_source)


def store_key(settings: Mapping[str, Any]) -> str:
    """A short hash of the (validated) store settings."""
    return config_hash({k: settings[k] for k in sorted(settings)})[:10]


def _legacy_matches(settings: Mapping[str, Any], root: Path) -> bool:
    try:
        recorded = json.loads((root / LEGACY_DESCRIPTION).read_text())
    except (OSError, ValueError):
        return False
    # the description alone: a redraw's working directory (the reference bundle) holds no store
    return all(recorded.get(k) == settings.get(k) for k in CONTENT_KEYS)


def store_paths(settings: Mapping[str, Any], root: str | os.PathLike = ".", data: Mapping[str, Any] | None = None
                ) -> StorePaths:
    """The store of these settings: results/data/store-<hash>/..., or the pre-keyed store when it matches.

    A raster or table source (config data.source, issue 20) keys its store by its own settings too (its path
    included: a moved source is another source) and names it store.zarr, with its verified record beside it: it never
    shares a folder, a store or a record with WorldClim's or another source's."""
    data = dict(data or {"source": "worldclim"})  # no data block: a caller that knows only WorldClim's stores
    source = data["source"]
    if source != "worldclim":
        key = config_hash({"store": {k: settings[k] for k in sorted(settings)}, "source": source,
                           "settings": data[source]})[:10]
        folder = f"{source}-{key}"
        return StorePaths(f"{DATA_ROOT}/{folder}/store.zarr", f"{DATA_ROOT}/{folder}/store.json",
                          SOURCE_VERIFIED.format(source_store=folder))
    if _legacy_matches(settings, Path(root)):
        return StorePaths(LEGACY_STORE, LEGACY_DESCRIPTION)
    folder = f"{DATA_ROOT}/store-{store_key(settings)}"
    return StorePaths(f"{folder}/worldclim.zarr", f"{folder}/worldclim_store.json")
