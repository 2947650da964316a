"""Leading latent means mu_k(x) on every valid cell of a gridded source, and their correlations with its variables.

The trained model encodes every land cell of the store (raw values standardized with the store's
training-sample mean and std). Latents are ranked by M^2 computed on the test-split cells (as in the
measurements); the leading `n_latents` are kept. Correlations are area-weighted Pearson correlations over all
valid cells (weights: cell area), between mu_k and each raw input variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

TEST_CODE = 2


def weighted_corr(a: np.ndarray, B: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlation of a (n,) with every column of B (n, m)."""
    w = np.asarray(w, dtype=np.float64) / np.sum(w)
    a = np.asarray(a, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    a0 = a - w @ a
    B0 = B - w @ B
    cov = w @ (a0[:, None] * B0)
    return cov / np.sqrt((w @ a0 ** 2) * (w @ B0 ** 2))


def signal_fraction(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """M_k^2 = mean(mu_k^2) / (mean(mu_k^2) + mean(s_k^2)) per latent (docs/science.md section 2)."""
    mu2 = np.mean(mu.astype(np.float64) ** 2, axis=0)
    s2 = np.mean(np.exp(logvar.astype(np.float64)), axis=0)
    return mu2 / (mu2 + s2)


def encode_land(store_path: str | Path, model_path: str | Path):
    """Encode every land cell. Returns (ds_store, land mask, mu (n_land, L), logvar, meta, member)."""
    from spectral_collapse.store import open_store
    from spectral_collapse.vae import encode_array, load_trained

    ds = open_store(store_path)
    land = ds["land_mask"].values.astype(bool)
    layers = ds["layers"] if "layers" in ds else ds["bioclim"]  # a WorldClim store built before issue 20
    raw = layers.values[:, land].T  # (n_valid, d)
    mean = ds["mean"].values
    std = ds["std"].values
    x = ((raw - mean) / std).astype(np.float32)
    model, meta = load_trained(model_path)
    member = _member_of(meta)
    mu, logvar = encode_array(model, x, member=member)
    return ds, land, raw, mu, logvar, meta, member


def _member_of(meta: dict) -> int:
    Ts = meta.get("T")
    return int(np.argmin(Ts)) if isinstance(Ts, (list, tuple, np.ndarray)) else 0


def variable_table(ds: xr.Dataset) -> pd.DataFrame:
    """variable, long_name, units of a store's inputs, in store order (long_name and units empty where the store
    holds none)."""
    names = [str(v) for v in ds["variable"].values]
    extra = {c: [str(v) for v in ds[c].values] if c in ds.coords else [""] * len(names) for c in ("long_name", "units")}
    return pd.DataFrame({"variable": names, **extra})


def carried_variables(mu: np.ndarray, x: np.ndarray, w: np.ndarray, latents: Sequence[int]) -> np.ndarray:
    """r (len(latents), d): the weighted Pearson correlation of each latent's posterior mean with every input."""
    return np.array([weighted_corr(mu[:, int(j)], x, w) for j in latents], dtype=float).reshape(len(latents),
                                                                                                x.shape[1])


def correlation_rows(points: pd.DataFrame, r: np.ndarray, info: pd.DataFrame) -> pd.DataFrame:
    """Long rows: one per (latent row of ``points``, variable of ``info``), with r[i, v]."""
    n, d = r.shape
    rows = points.loc[points.index.repeat(d)].reset_index(drop=True)
    vars_ = pd.concat([info] * n, ignore_index=True)
    return pd.concat([rows, vars_], axis=1).assign(r=r.ravel())


def _correlation_rows(mu: np.ndarray, M2: np.ndarray, order: np.ndarray, x: np.ndarray, w: np.ndarray,
                      ds: xr.Dataset) -> pd.DataFrame:
    """The leading latents' (``order``) correlations with every input, one row per (rank, variable)."""
    points = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "latent": order.astype(np.int64),
                           "M2": M2[order].astype(float)})
    return correlation_rows(points, carried_variables(mu, x, w, order), variable_table(ds))


def latent_samples(store_path: str | Path, model_path: str | Path, n_latents: int):
    """A table source (no grid): the leading latents' means on the test rows, and their weighted correlations with
    the inputs (Pearson r does not change under the store's standardization, so the standardized rows serve)."""
    from spectral_collapse.store import load_split, load_weights, open_store
    from spectral_collapse.vae import encode_array, load_trained

    x, w = load_split(store_path, "test"), load_weights(store_path, "test")
    model, meta = load_trained(model_path)
    member = _member_of(meta)
    mu, logvar = encode_array(model, x, member=member)
    M2 = signal_fraction(mu, logvar)
    order = np.argsort(-M2, kind="stable")[: int(n_latents)]
    pick = lambda v: (v[member] if isinstance(v, (list, tuple)) else v)  # noqa: E731
    maps = xr.Dataset(
        {"mu": (("rank", "test_sample"), mu[:, order].T.astype(np.float32), {"long_name": "posterior mean of the latent", "units": "1"})},
        coords={"rank": ("rank", np.arange(1, len(order) + 1), {"long_name": "rank by M^2 on the test split (1 = largest)"}),
                "latent": ("rank", order.astype(np.int32), {"long_name": "latent index in the model"}),
                "M2": ("rank", M2[order], {"long_name": "signal fraction M^2 on the test split"})},
        attrs={"model_path": str(model_path), "T": float(pick(meta.get("T", np.nan))),
               "seed": int(pick(meta.get("seed", -1))), "member": member,
               "comment": "every test row encoded (a table source has no grid)"},
    )
    with open_store(store_path) as ds:
        corr = _correlation_rows(mu, M2, order, x, w, ds)
    return maps, corr


def latent_maps(store_path: str | Path, model_path: str | Path, n_latents: int):
    """(maps Dataset, correlations DataFrame) for the leading n_latents latents of a trained model; a table
    source's `maps` holds the latents on the test rows (``latent_samples``)."""
    from spectral_collapse.store import open_store

    with open_store(store_path) as probe:
        gridded = "land_mask" in probe
    if not gridded:
        return latent_samples(store_path, model_path, n_latents)
    ds, land, raw, mu, logvar, meta, member = encode_land(store_path, model_path)
    split = ds["split"].values[land]
    test = split == TEST_CODE
    M2 = signal_fraction(mu[test], logvar[test]) if test.any() else signal_fraction(mu, logvar)
    order = np.argsort(-M2, kind="stable")[: int(n_latents)]
    area = ds["cell_area"].values[land]
    grid = np.full((len(order),) + land.shape, np.nan, dtype=np.float32)
    for i, j in enumerate(order):
        grid[i][land] = mu[:, j]
    pick = lambda v: (v[member] if isinstance(v, (list, tuple)) else v)  # noqa: E731
    ranks = np.arange(1, len(order) + 1)
    maps = xr.Dataset(
        {"mu": (("rank", "lat", "lon"), grid, {"long_name": "posterior mean of the latent", "units": "1"})},
        coords={
            "rank": ("rank", ranks, {"long_name": "rank by M^2 on the test split (1 = largest)"}),
            "latent": ("rank", order.astype(np.int32), {"long_name": "latent index in the model"}),
            "M2": ("rank", M2[order], {"long_name": "signal fraction M^2 on the test split"}),
            "lat": ds["lat"].values, "lon": ds["lon"].values,
        },
        attrs={"model_path": str(model_path), "T": float(pick(meta.get("T", np.nan))),
               "seed": int(pick(meta.get("seed", -1))), "member": member,
               "comment": "every land cell encoded (standardized with the store's training mean and std)"},
    )
    corr = _correlation_rows(mu, M2, order, raw, area, ds)
    ds.close()
    return maps, corr


def write_netcdf(ds: xr.Dataset, path: str | Path) -> None:
    """NetCDF (scipy engine: NETCDF3 64-bit, no extra dependency), written atomically."""
    from spectral_collapse.provenance import atomic_path

    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="scipy", format="NETCDF3_64BIT")
