"""The Zarr store of the input data: for a gridded source (WorldClim 2.1, a raster stack) the layers, valid-cell
mask, cell areas and spatial-block split; for a table source its rows; for both the standardized weighted training
sample and the held-out splits with their weights (layout: docs/contracts.md section 2).

Training and evaluation read only this store (`load_split`, `store_V`), never the rasters, so the
split, the standardization and the sample are fixed once, here, from the config and the seed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr

from spectral_collapse import geo
from spectral_collapse.provenance import atomic_path
from spectral_collapse.sources import GridStack, SourceError, TableData, Variables

SPLITS = ("train", "validation", "test")
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
OFF_LAND = -1

SAMPLING = (
    "area-weighted, with replacement: n_train i.i.d. draws from the training cells with probability "
    "proportional to cell area (~cos latitude). With replacement because n_train (paper: 500,000) is "
    "close to the number of training cells (~660,000), where sampling without replacement would flatten "
    "the area weights toward uniform."
)


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


def standardization(x: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-variable mean and (population, ddof=0) std of the training sample, float64."""
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    bad = [names[i] for i in np.flatnonzero(~(std > 0))]
    if bad:
        raise SourceError(f"variables {bad} are constant over the training sample: they carry no variation. Drop "
                          "them from the source's variables, or raise store.n_train.")
    return mean, std


Scaler = Callable[[np.ndarray], np.ndarray]


def _standardized(train_raw: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, Scaler, np.ndarray, float]:
    """(mean, std, the standardizing map, the standardized training sample, V = its total variance): what every
    source's store is built on, from its training sample alone."""
    mean, std = standardization(train_raw, names)

    def scale(x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std).astype(np.float32)

    train_x = scale(train_raw)
    return mean, std, scale, train_x, float(train_x.astype(np.float64).var(axis=0).sum())


def _random_streams(settings: Mapping[str, Any]) -> tuple[np.random.Generator, np.random.Generator]:
    """(the split's generator, the training sample's generator), both spawned from store.split_seed."""
    split_rng, sample_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(settings["split_seed"])).spawn(2))
    return split_rng, sample_rng


def _standardization_vars(mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    return {
        "mean": (("variable",), mean, {"long_name": "training-sample mean (standardization)", "comment": "in units(variable)"}),
        "std": (("variable",), std, {"long_name": "training-sample standard deviation, ddof=0 (standardization)", "comment": "in units(variable)"}),
    }


def _variable_coords(variables: Variables) -> dict[str, Any]:
    return {
        "variable": ("variable", list(variables.names), {"long_name": "input variable"}),
        "long_name": ("variable", list(variables.long_names), {"long_name": "long name of the input variable"}),
        "units": ("variable", list(variables.units), {"long_name": "units of the input variable"}),
    }


def _grid_coords(lat: np.ndarray, lon: np.ndarray) -> dict[str, Any]:
    return {
        "lat": ("lat", lat, {"standard_name": "latitude", "long_name": "latitude of cell centre", "units": "degrees_north", "axis": "Y"}),
        "lon": ("lon", lon, {"standard_name": "longitude", "long_name": "longitude of cell centre", "units": "degrees_east", "axis": "X"}),
    }


def _sample_vars(split: str, x: np.ndarray, index: Mapping[str, tuple[np.ndarray, str]],
                 weight: tuple[str, np.ndarray, dict] | None) -> dict[str, Any]:
    dim = f"{split}_sample"
    out = {
        f"{split}_x": ((dim, "variable"), x.astype(np.float32), {
            "long_name": f"standardized input variables, {split} split",
            "units": "1", "comment": "(raw - mean) / std with the training-sample statistics"}),
    }
    for name, (values, long_name) in index.items():
        out[f"{split}_{name}"] = ((dim,), values, {"long_name": long_name})
    if weight is not None:
        name, values, attrs = weight
        out[f"{split}_{name}"] = ((dim,), values.astype(np.float32), attrs)
    return out


def _description(variables: Variables, mean: np.ndarray, std: np.ndarray, V: float, n_blocks: int,
                 block_split: np.ndarray, units: Mapping[str, int], pick: np.ndarray, settings: Mapping[str, Any],
                 sampling: str) -> dict[str, Any]:
    return {
        "n_blocks": n_blocks,
        "blocks": {name: int((block_split == code).sum()) for name, code in SPLIT_CODES.items()},
        "cells": dict(units),
        "n_train": int(settings["n_train"]),
        "n_train_unique_cells": int(np.unique(pick).size),
        "heldout_fraction": float(settings["heldout_fraction"]),
        "split_seed": int(settings["split_seed"]),
        "sampling": sampling,
        "variables": list(variables.names),
        "mean": dict(zip(variables.names, mean.tolist())),
        "std": dict(zip(variables.names, std.tolist())),
        "V": V,
    }


def build_dataset(stack: GridStack, settings: Mapping[str, Any], source: Mapping[str, str],
                  sha256: Mapping[str, str] | None = None) -> tuple[xr.Dataset, dict[str, Any]]:
    """Everything a gridded source's store holds, in memory, plus its description (the store's JSON).

    `source` gives the dataset's title and citation (CF `title`, `source`)."""
    data, lat, lon, variables = stack.data, stack.lat, stack.lon, stack.variables
    block_km = float(settings["block_km"])
    land = np.isfinite(data).all(axis=0)
    data = np.where(land[None], data, np.float32(np.nan))
    area = geo.cell_area_km2(lat, lon).astype(np.float32)
    block, n_blocks = assign_blocks(geo.equal_area_blocks(lat, lon, block_km), land)
    if n_blocks < 3:
        raise SourceError(f"only {n_blocks} blocks hold valid cells; lower config key store.block_km ({block_km}).")
    split_rng, sample_rng = _random_streams(settings)
    block_split = split_blocks(n_blocks, float(settings["heldout_fraction"]), split_rng)
    split = np.full(land.shape, OFF_LAND, dtype=np.int8)
    split[land] = block_split[block[land]]
    cells = {name: np.nonzero(split == code) for name, code in SPLIT_CODES.items()}
    rows, cols = cells["train"]
    pick = area_weighted_sample(area[rows, cols], int(settings["n_train"]), sample_rng)
    mean, std, scale, train_x, V = _standardized(data[:, rows[pick], cols[pick]].T, variables.names)
    d = len(variables.names)

    def grid_index(r: np.ndarray, c: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
        return {"row": (r.astype(np.int32), "grid row (lat index) of the cell"),
                "col": (c.astype(np.int32), "grid column (lon index) of the cell")}

    data_vars: dict[str, Any] = {
        "layers": (("variable", "lat", "lon"), data, {
            "long_name": source["title"],
            "comment": "raw values; units per layer in the units(variable) coordinate; NaN where a layer has none",
            "grid_mapping": "crs"}),
        "land_mask": (("lat", "lon"), land, {
            "standard_name": "land_binary_mask", "long_name": f"cell valid in all {d} layers", "units": "1"}),
        "cell_area": (("lat", "lon"), area, {"standard_name": "cell_area", "long_name": "spherical cell area", "units": "km2"}),
        "block": (("lat", "lon"), block, {
            "long_name": f"equal-area spatial block id (side ~{block_km:g} km)", "units": "1",
            "comment": f"{OFF_LAND} off land; ids run north to south, west to east"}),
        "split": (("lat", "lon"), split, {
            "long_name": "spatial-block split", "flag_values": [OFF_LAND, 0, 1, 2],
            "flag_meanings": "off_land train validation test", "units": "1"}),
        **_standardization_vars(mean, std),
        "crs": ((), np.int32(0), {"grid_mapping_name": "latitude_longitude", "epsg_code": stack.crs,
                                  "semi_major_axis": 6378137.0, "inverse_flattening": 298.257223563}),
    }
    data_vars.update(_sample_vars("train", train_x, grid_index(rows[pick], cols[pick]), None))
    for name in ("validation", "test"):
        r, c = cells[name]
        data_vars.update(_sample_vars(name, scale(data[:, r, c].T), grid_index(r, c), ("area", area[r, c], {
            "standard_name": "cell_area", "long_name": "cell area", "units": "km2"})))

    description = {"n_land": int(land.sum()),
                   **_description(variables, mean, std, V, n_blocks, block_split,
                                  {name: int(cells[name][0].size) for name in SPLITS}, pick, settings, SAMPLING),
                   "block_km": block_km}
    attrs = _attrs(source, description, sha256)
    coords = {**_variable_coords(variables), **_grid_coords(lat, lon)}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs), description


def _attrs(source: Mapping[str, str], description: Mapping[str, Any], sha256: Mapping[str, str] | None) -> dict[str, Any]:
    keys = ("V", "n_land", "n_rows", "n_blocks", "split_seed", "block_km", "heldout_fraction", "n_train", "sampling")
    return {"Conventions": "CF-1.10", "title": source["title"], "source": source["source"],
            **{k: description[k] for k in keys if k in description},
            "blocks_per_split": description["blocks"], "cells_per_split": description["cells"],
            "sha256": dict(sha256 or {})}


TABLE_SAMPLING = (
    "weighted, with replacement: n_train i.i.d. draws from the training rows with probability proportional to "
    "the weight column (equal when there is none), as the gridded sources draw cells by area"
)


def table_blocks(table: TableData, block_rows: int, seed: int) -> tuple[np.ndarray, int, str]:
    """(block id per row, number of blocks, how they were made): the group column's values (keep neighbouring
    sites together through it), or random blocks of `block_rows` rows: the rows in a random order drawn from
    store.split_seed (a third stream, beside the split's and the training sample's), cut into runs."""
    if table.groups is not None:
        _, block = np.unique(table.groups.astype(str), return_inverse=True)
        return block.astype(np.int64), int(block.max()) + 1, "one block per value of the group column"
    order = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(3)[2]).permutation(len(table.x))
    block = np.empty(len(table.x), dtype=np.int64)
    block[order] = np.arange(len(table.x)) // int(block_rows)
    return block, int(block.max()) + 1, (f"random blocks of {int(block_rows)} rows (data.table.block_rows; rows "
                                         "shuffled with store.split_seed)")


def build_table_dataset(table: TableData, settings: Mapping[str, Any], block_rows: int, min_train_rows: int,
                        source: Mapping[str, str], sha256: Mapping[str, str] | None = None,
                        path: str = "the table") -> tuple[xr.Dataset, dict[str, Any]]:
    """A table source's store: the same samples, weights and split contract as a gridded one, without a grid."""
    block, n_blocks, how = table_blocks(table, block_rows, int(settings["split_seed"]))
    if n_blocks < 3:
        raise SourceError(f"{path}: only {n_blocks} blocks of rows for a train/validation/test split; lower "
                          "data.table.block_rows or give a group column with more values (data.table.group).")
    split_rng, sample_rng = _random_streams(settings)
    block_split = split_blocks(n_blocks, float(settings["heldout_fraction"]), split_rng)
    split = block_split[block]
    rows = {name: np.flatnonzero(split == code) for name, code in SPLIT_CODES.items()}
    n_drawable = int((table.weights[rows["train"]] > 0).sum())  # rows the training sample can draw
    if n_drawable < min_train_rows:
        raise SourceError(f"{path}: {n_drawable} rows with a positive weight in the training split, fewer than one "
                          f"batch ({min_train_rows} rows, the largest training.batch_size); give more rows, or lower "
                          "training.batch_size (and models.<family>.training.batch_size).")
    empty = [name for name in SPLITS if not table.weights[rows[name]].sum() > 0]
    if empty:
        raise SourceError(f"{path}: the {empty[0]} split holds no row with a positive weight; lower "
                          "data.table.block_rows, give the group column more values, or raise store.heldout_fraction.")
    pick = area_weighted_sample(table.weights[rows["train"]], int(settings["n_train"]), sample_rng)
    mean, std, scale, train_x, V = _standardized(table.x[rows["train"][pick]], table.variables.names)
    data_vars: dict[str, Any] = {
        **_standardization_vars(mean, std),
    }
    row_index = lambda r: {"row": (r.astype(np.int64), "row of the table (0-based, after rows with a missing value were dropped)")}  # noqa: E731
    data_vars.update(_sample_vars("train", train_x, row_index(rows["train"][pick]), None))
    for name in ("validation", "test"):
        r = rows[name]
        data_vars.update(_sample_vars(name, scale(table.x[r]), row_index(r), ("weight", table.weights[r], {
            "long_name": "row weight (the weight column; 1 without one)", "units": "1"})))
    description = {"n_rows": int(len(table.x)), "n_dropped": table.n_dropped, "n_rows_read": table.n_rows_read,
                   **_description(table.variables, mean, std, V, n_blocks, block_split,
                                  {name: int(rows[name].size) for name in SPLITS}, pick, settings, TABLE_SAMPLING),
                   "blocks_from": how}
    return xr.Dataset(data_vars, coords=_variable_coords(table.variables), attrs=_attrs(source, description, sha256)), description


def _encoding(ds: xr.Dataset, tile: list[int]) -> dict[str, dict[str, Any]]:
    """Spatial tiles for gridded variables (store.tile), one chunk per sample array of <= 64k rows."""
    enc: dict[str, dict[str, Any]] = {}
    if "layers" in ds:
        nv, ny, nx = (min(int(t), n) for t, n in zip(tile, ds["layers"].shape))
        enc["layers"] = {"chunks": (nv, ny, nx), "_FillValue": np.float32(np.nan)}
        for name in ("land_mask", "cell_area", "block", "split"):
            enc[name] = {"chunks": (ny, nx)}
    for name, var in ds.data_vars.items():
        if name.startswith(tuple(f"{split}_" for split in SPLITS)):
            enc[name] = {"chunks": (min(65536, var.shape[0]),) + tuple(var.shape[1:])}
    return enc


def write_store(ds: xr.Dataset, path: str | os.PathLike, tile: list[int]) -> None:
    """Write the store at `path` under a temporary name, renamed when complete: nothing partial is left."""
    with atomic_path(path) as tmp:
        ds.to_zarr(tmp, mode="w-", zarr_format=2, consolidated=True, encoding=_encoding(ds, list(tile)))


def build_store(
    raster_dir: str | os.PathLike, path: str | os.PathLike, settings: Mapping[str, Any], sha256: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Build the WorldClim 2.1 store at `path` (under a temporary name, renamed when complete); return its
    description. `settings` is the config `store` block. On any error nothing is left at `path`."""
    from spectral_collapse.worldclim import SOURCE, read_rasters

    ds, description = build_dataset(read_rasters(raster_dir), settings, SOURCE, sha256)
    write_store(ds, path, settings["tile"])
    return description


def build_source_store(data: Mapping[str, Any], root: str | os.PathLike, path: str | os.PathLike,
                       settings: Mapping[str, Any], min_train_rows: int, sha256: Mapping[str, str]) -> dict[str, Any]:
    """Build the store of a raster-stack or table source (config data.source); return its description."""
    from spectral_collapse.sources import read_raster_stack, read_table, resolve, source_kind

    kind = source_kind(data)
    if kind not in ("raster", "table"):
        raise ValueError(f"data.source {kind!r} is built by build_store")
    source_settings = data[kind]
    where = str(resolve(source_settings["path"], root, f"data.{kind}.path"))
    label = "raster stack" if kind == "raster" else "table"
    source = {"title": source_settings.get("title") or f"{label} {Path(where).name}",
              "source": str(source_settings.get("citation") or source_settings["path"])}
    if kind == "raster":
        ds, description = build_dataset(read_raster_stack(source_settings, root), settings, source, sha256)
    else:
        ds, description = build_table_dataset(read_table(source_settings, root), settings,
                                              int(source_settings["block_rows"]), min_train_rows, source, sha256, where)
    write_store(ds, path, settings["tile"])
    return description


# --------------------------------------------------------------------------- reading the store


def open_store(path: str | os.PathLike) -> xr.Dataset:
    """Open the store lazily (consolidated Zarr v2)."""
    path = Path(path)
    if not (path / ".zmetadata").is_file():
        raise FileNotFoundError(f"no Zarr store at {path}; build it with `snakemake -c1 data`.")
    return xr.open_zarr(path, consolidated=True, zarr_format=2)


def load_split(path: str | os.PathLike, split: str) -> np.ndarray:
    """The standardized samples of one split as float32 (n, d): the weighted training sample,
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

    Held-out splits (validation, test) hold every valid cell (row) of their blocks once, so a mean over them must
    weigh each by its weight: a grid's cell area (~cos latitude; docs/science.md section 4), a table's weight
    column. The training split is already a weighted sample (drawn with probability proportional to the
    weight), so its rows weigh 1 each.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    with open_store(path) as ds:
        n = ds.sizes[f"{split}_sample"]
        if split == "train":
            return np.ones(n, dtype=np.float64)
        name = f"{split}_area" if f"{split}_area" in ds else f"{split}_weight"  # a grid's cell area, a table's weight
        return np.asarray(ds[name].values, dtype=np.float64)
