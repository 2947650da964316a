"""results/summary.json, the study summary: every model's analysis (``model_analysis.analyse_model``), the PCA,
the data checksums and where the rasters were read, the config hash and the package versions."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from ..store import HELDOUT_WEIGHTING
from .model_analysis import _clean


def study_summary(models: Mapping[str, dict], pca: pd.DataFrame, verified: Mapping[str, Any],
                  store_description: Mapping[str, Any], config: Mapping[str, Any]) -> dict:
    """results/summary.json from every model's analysis, the PCA table, the verified checksums and the store's
    description (``worldclim_store.json``, which also says where the rasters were read)."""
    from spectral_collapse.provenance import config_hash, package_versions

    pca = pca.sort_values("k")
    return _clean({
        "schema": "spectral-collapse summary v2 (docs/summary-keys.md)",
        "models": dict(models),
        "pca": {"k": pca["k"].tolist(), "lambda": pca["lambda"].tolist(),
                "lambda_over_V": pca["lambda_over_V"].tolist(), "V": float(pca["V"].iloc[0]),
                "a_test": pca["a_test"].tolist(), "a_validation": pca["a_validation"].tolist()},
        "heldout_weighting": HELDOUT_WEIGHTING,
        "data": {
            "files_sha256": dict(verified["files"]),
            "raster_source": store_description.get("raster_source"),  # where the store was built from: provenance only
            # n_land for a grid, n_rows and n_dropped (rows with a missing value) for a table
            "store": {k: store_description[k] for k in ("n_land", "n_rows", "n_dropped", "n_train", "n_blocks", "V",
                                                         "blocks", "cells") if k in store_description},
        },
        "config_hash": config_hash(dict(config)),
        "package_versions": package_versions(),
    })
