"""The tiled Zarr store: 19 WorldClim layers, land mask, cell areas, spatial-block split and the
standardized area-weighted training sample (layout: docs/contracts.md section 2).

Training and evaluation read only this store (`load_split`, `store_V`), never the rasters, so the
split, the standardization and the sample are fixed once, here, from the config and the seed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from spectral_collapse import geo
from spectral_collapse.provenance import atomic_path
from spectral_collapse.worldclim import BIO_FILES, BIO_VARIABLES, WorldClimError, check_complete

SPLITS = ("train", "validation", "test")
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
OFF_LAND = -1

# The 10' global grid every WorldClim 2.1 layer is on (the data's PROVENANCE.md, beside the rasters in shared/worldclim/):
# 1080 x 2160 cells, EPSG:4326.
GRID_SHAPE = (1080, 2160)
GRID_RES = 1.0 / 6.0
GRID_ORIGIN = (-180.0, 90.0)  # west edge, north edge

SAMPLING = (
    "area-weighted, with replacement: n_train i.i.d. draws from the training cells with probability "
    "proportional to cell area (~cos latitude). With replacement because n_train (paper: 500,000) is "
    "close to the number of training cells (~660,000), where sampling without replacement would flatten "
    "the area weights toward uniform."
)


# --------------------------------------------------------------------------- reading and checking rasters


def _fix(path: Path) -> str:
    return f"Replace {path} with {path.name} from the official WorldClim 2.1 10' archive (wc2.1_10m_bio.zip)."


def _open_layer(path: Path) -> xr.DataArray:
    """Open one GeoTIFF lazily with rioxarray and check it is on the 10' global grid."""
    import rioxarray  # noqa: F401  (registers .rio)

    try:
        with warnings.catch_warnings():  # affine's `*` deprecation inside rioxarray 0.19: not ours to fix
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            da = rioxarray.open_rasterio(path, masked=True, cache=False, lock=False)
            _ = da.rio.transform()
    except Exception as exc:  # rasterio raises several types for unreadable files
        raise WorldClimError(f"{path.name}: not a readable GeoTIFF ({exc}). {_fix(path)}") from exc
    _check_grid(da, path)
    return da


def _check_grid(da: xr.DataArray, path: Path) -> None:
    """Refuse a layer on another grid (shape, resolution, extent or CRS) before any data is read."""
    shape = tuple(da.shape[-2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        t = da.rio.transform()
    crs = da.rio.crs
    problems = []
    if da.sizes.get("band", 1) != 1:
        problems.append(f"{da.sizes['band']} bands (expected 1)")
    if shape != GRID_SHAPE:
        problems.append(f"shape {shape[0]}x{shape[1]} (expected {GRID_SHAPE[0]}x{GRID_SHAPE[1]})")
    if not np.allclose([t.a, -t.e, t.c, t.f, t.b, t.d], [GRID_RES, GRID_RES, *GRID_ORIGIN, 0, 0], atol=1e-6):
        problems.append(f"transform {tuple(round(v, 6) for v in t[:6])} (expected 10' cells from -180, 90)")
    if crs is None or crs.to_epsg() != 4326:
        problems.append(f"CRS {crs} (expected EPSG:4326)")
    if problems:
        raise WorldClimError(
            f"{path.name} is on another grid than the WorldClim 2.1 10' global grid: {'; '.join(problems)}. {_fix(path)}"
        )


def read_rasters(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 19 layers as float32 (19, lat, lon) with NaN for nodata, plus lat and lon cell centres.

    All headers are checked first, so a bad file fails fast and before any large read.
    """
    folder = Path(folder)
    check_complete(folder)
    layers = [_open_layer(folder / name) for name in BIO_FILES]
    data = np.empty((len(BIO_FILES), *GRID_SHAPE), dtype=np.float32)
    try:
        for i, (name, da) in enumerate(zip(BIO_FILES, layers)):
            try:
                data[i] = da.values[0]
            except Exception as exc:
                detail = f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
                raise WorldClimError(f"{name}: cannot read its pixels ({detail}); the file is corrupt. {_fix(folder / name)}") from exc
        lat, lon = layers[0]["y"].values.astype(np.float64), layers[0]["x"].values.astype(np.float64)
    finally:
        for da in layers:
            da.close()
    return data, lat, lon


# --------------------------------------------------------------------------- split and sample


def assign_blocks(blocks_global: np.ndarray, land: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber the blocks holding land cells 0..n-1 (north to south, west to east); -1 off land."""
    ids = np.unique(blocks_global[land])
    block = np.full(land.shape, OFF_LAND, dtype=np.int32)
    block[land] = np.searchsorted(ids, blocks_global[land]).astype(np.int32)
    return block, int(ids.size)


def split_blocks(n_blocks: int, heldout_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Split code per block: a random round(fraction * n) blocks (made even) are held out, half
    validation, half test; the rest train. Fractions are of blocks, not of cells."""
    n_heldout = 2 * int(round(heldout_fraction * n_blocks / 2))
    n_heldout = min(max(n_heldout, 2), n_blocks - 1)
    order = rng.permutation(n_blocks)
    codes = np.full(n_blocks, SPLIT_CODES["train"], dtype=np.int8)
    codes[order[: n_heldout // 2]] = SPLIT_CODES["validation"]
    codes[order[n_heldout // 2 : n_heldout]] = SPLIT_CODES["test"]
    return codes


def area_weighted_sample(area: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of n draws, with replacement, with probability proportional to `area`."""
    p = area.astype(np.float64)
    return rng.choice(area.size, size=int(n), replace=True, p=p / p.sum())


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-variable mean and (population, ddof=0) std of the training sample, float64."""
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    bad = [BIO_VARIABLES[i][0] for i in np.flatnonzero(~(std > 0))]
    if bad:
        raise WorldClimError(f"variables {bad} are constant over the training sample; check the rasters and store.n_train.")
    return mean, std


# --------------------------------------------------------------------------- the dataset


def _grid_coords(lat: np.ndarray, lon: np.ndarray) -> dict[str, Any]:
    names, long_names, units = zip(*BIO_VARIABLES)
    return {
        "variable": ("variable", list(names), {"long_name": "WorldClim 2.1 bioclimatic variable"}),
        "long_name": ("variable", list(long_names), {"long_name": "long name of the bioclimatic variable"}),
        "units": ("variable", list(units), {"long_name": "units of the bioclimatic variable"}),
        "lat": ("lat", lat, {"standard_name": "latitude", "long_name": "latitude of cell centre", "units": "degrees_north", "axis": "Y"}),
        "lon": ("lon", lon, {"standard_name": "longitude", "long_name": "longitude of cell centre", "units": "degrees_east", "axis": "X"}),
    }


def _sample_vars(split: str, x: np.ndarray, rows: np.ndarray, cols: np.ndarray, area: np.ndarray | None) -> dict[str, Any]:
    dim = f"{split}_sample"
    out = {
        f"{split}_x": ((dim, "variable"), x.astype(np.float32), {
            "long_name": f"standardized bioclimatic variables, {split} split",
            "units": "1", "comment": "(raw - mean) / std with the training-sample statistics"}),
        f"{split}_row": ((dim,), rows.astype(np.int32), {"long_name": "grid row (lat index) of the cell"}),
        f"{split}_col": ((dim,), cols.astype(np.int32), {"long_name": "grid column (lon index) of the cell"}),
    }
    if area is not None:
        out[f"{split}_area"] = ((dim,), area.astype(np.float32), {"standard_name": "cell_area", "long_name": "cell area", "units": "km2"})
    return out


def build_dataset(
    data: np.ndarray, lat: np.ndarray, lon: np.ndarray, settings: Mapping[str, Any], sha256: Mapping[str, str] | None = None
) -> tuple[xr.Dataset, dict[str, Any]]:
    """Everything the store holds, in memory, plus the description for worldclim_store.json."""
    block_km = float(settings["block_km"])
    seed = int(settings["split_seed"])
    land = np.isfinite(data).all(axis=0)
    data = np.where(land[None], data, np.float32(np.nan))
    area = geo.cell_area_km2(lat, lon).astype(np.float32)
    block, n_blocks = assign_blocks(geo.equal_area_blocks(lat, lon, block_km), land)
    if n_blocks < 3:
        raise WorldClimError(f"only {n_blocks} blocks hold land; lower config key store.block_km ({block_km}).")
    split_rng, sample_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    block_split = split_blocks(n_blocks, float(settings["heldout_fraction"]), split_rng)
    split = np.full(land.shape, OFF_LAND, dtype=np.int8)
    split[land] = block_split[block[land]]

    cells = {name: np.nonzero(split == code) for name, code in SPLIT_CODES.items()}
    rows, cols = cells["train"]
    pick = area_weighted_sample(area[rows, cols], int(settings["n_train"]), sample_rng)
    train_raw = data[:, rows[pick], cols[pick]].T
    mean, std = standardization(train_raw)
    scale = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    train_x = scale(train_raw)
    V = float(train_x.astype(np.float64).var(axis=0).sum())

    data_vars: dict[str, Any] = {
        "bioclim": (("variable", "lat", "lon"), data, {
            "long_name": "WorldClim 2.1 bioclimatic variables (10 arc-minutes, 1970-2000)",
            "comment": "raw values; units per layer in the units(variable) coordinate; NaN off land",
            "grid_mapping": "crs"}),
        "land_mask": (("lat", "lon"), land, {
            "standard_name": "land_binary_mask", "long_name": "cell valid in all 19 layers", "units": "1"}),
        "cell_area": (("lat", "lon"), area, {"standard_name": "cell_area", "long_name": "spherical cell area", "units": "km2"}),
        "block": (("lat", "lon"), block, {
            "long_name": f"equal-area spatial block id (side ~{block_km:g} km)", "units": "1",
            "comment": f"{OFF_LAND} off land; ids run north to south, west to east"}),
        "split": (("lat", "lon"), split, {
            "long_name": "spatial-block split", "flag_values": [OFF_LAND, 0, 1, 2],
            "flag_meanings": "off_land train validation test", "units": "1"}),
        "mean": (("variable",), mean, {"long_name": "training-sample mean (standardization)", "comment": "in units(variable)"}),
        "std": (("variable",), std, {"long_name": "training-sample standard deviation, ddof=0 (standardization)", "comment": "in units(variable)"}),
        "crs": ((), np.int32(0), {"grid_mapping_name": "latitude_longitude", "epsg_code": "EPSG:4326",
                                  "semi_major_axis": 6378137.0, "inverse_flattening": 298.257223563}),
    }
    data_vars.update(_sample_vars("train", train_x, rows[pick], cols[pick], None))
    for name in ("validation", "test"):
        r, c = cells[name]
        data_vars.update(_sample_vars(name, scale(data[:, r, c].T), r, c, area[r, c]))

    description = {
        "n_land": int(land.sum()),
        "n_blocks": n_blocks,
        "blocks": {name: int((block_split == code).sum()) for name, code in SPLIT_CODES.items()},
        "cells": {name: int(cells[name][0].size) for name in SPLITS},
        "n_train": int(settings["n_train"]),
        "n_train_unique_cells": int(np.unique(pick).size),
        "block_km": block_km,
        "heldout_fraction": float(settings["heldout_fraction"]),
        "split_seed": seed,
        "sampling": SAMPLING,
        "variables": [v[0] for v in BIO_VARIABLES],
        "mean": dict(zip((v[0] for v in BIO_VARIABLES), mean.tolist())),
        "std": dict(zip((v[0] for v in BIO_VARIABLES), std.tolist())),
        "V": V,
    }
    attrs = {
        "Conventions": "CF-1.10",
        "title": "WorldClim 2.1 bioclimatic variables, 10 arc-minutes, tiled for the spectral-collapse study",
        "source": "WorldClim 2.1 (Fick & Hijmans 2017, doi:10.1002/joc.5086), wc2.1_10m_bio.zip",
        "V": V, "n_land": description["n_land"], "n_blocks": n_blocks, "split_seed": seed, "block_km": block_km,
        "heldout_fraction": description["heldout_fraction"], "n_train": description["n_train"], "sampling": SAMPLING,
        "blocks_per_split": description["blocks"], "cells_per_split": description["cells"],
        "sha256": dict(sha256 or {}),
    }
    return xr.Dataset(data_vars, coords=_grid_coords(lat, lon), attrs=attrs), description


def _encoding(ds: xr.Dataset, tile: list[int]) -> dict[str, dict[str, Any]]:
    """Spatial tiles for gridded variables (store.tile), one chunk per sample array of <= 64k rows."""
    nv, ny, nx = (int(t) for t in tile)
    enc: dict[str, dict[str, Any]] = {"bioclim": {"chunks": (min(nv, 19), ny, nx), "_FillValue": np.float32(np.nan)}}
    for name in ("land_mask", "cell_area", "block", "split"):
        enc[name] = {"chunks": (ny, nx)}
    for name, var in ds.data_vars.items():
        if name.startswith(tuple(f"{split}_" for split in SPLITS)):
            enc[name] = {"chunks": (min(65536, var.shape[0]),) + tuple(var.shape[1:])}
    return enc


def build_store(
    raster_dir: str | os.PathLike, path: str | os.PathLike, settings: Mapping[str, Any], sha256: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Build the store at `path` (under a temporary name, renamed when complete); return its description.

    `settings` is the config `store` block. On any error nothing is left at `path`.
    """
    data, lat, lon = read_rasters(raster_dir)
    ds, description = build_dataset(data, lat, lon, settings, sha256)
    with atomic_path(path) as tmp:
        ds.to_zarr(tmp, mode="w-", zarr_format=2, consolidated=True, encoding=_encoding(ds, list(settings["tile"])))
    return description


# --------------------------------------------------------------------------- reading the store


def open_store(path: str | os.PathLike) -> xr.Dataset:
    """Open the store lazily (consolidated Zarr v2)."""
    path = Path(path)
    if not (path / ".zmetadata").is_file():
        raise FileNotFoundError(f"no Zarr store at {path}; build it with `snakemake -c1 data`.")
    return xr.open_zarr(path, consolidated=True, zarr_format=2)


def load_split(path: str | os.PathLike, split: str) -> np.ndarray:
    """The standardized samples of one split as float32 (n, 19): the area-weighted training sample,
    or every land cell of the validation / test blocks."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    with open_store(path) as ds:
        return np.ascontiguousarray(ds[f"{split}_x"].values, dtype=np.float32)


def store_V(path: str | os.PathLike) -> float:
    """V: total variance of the standardized training sample (the normalization of T)."""
    with open_store(path) as ds:
        return float(ds.attrs["V"])


HELDOUT_WEIGHTING = ("held-out means (validation loss, every validation/test measurement) are "
                     "cell-area-weighted means; the training sample (area-weighted draws) weighs each row 1")


def load_weights(path: str | os.PathLike, split: str) -> np.ndarray:
    """Per-sample weights of one split, float64 (n,): what a mean over that split weighs each row by.

    Held-out splits (validation, test) hold every land cell of their blocks once, so a mean over them must
    weigh each cell by its area (~cos latitude; docs/science.md section 4): the weight is the stored cell
    area. The training split is already an area-weighted sample (cells drawn with probability
    proportional to area), so its rows weigh 1 each.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    with open_store(path) as ds:
        n = ds.sizes[f"{split}_sample"]
        if split == "train":
            return np.ones(n, dtype=np.float64)
        return np.asarray(ds[f"{split}_area"].values, dtype=np.float64)
