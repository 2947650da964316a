"""The user's own data (issue 20): a stack of single-band rasters on one grid, or a table (CSV or Parquet).

WorldClim 2.1 stays the default source (``spectral_collapse.worldclim``); the config key ``data.source`` picks
``raster`` or ``table`` instead, with the settings under ``data.raster`` / ``data.table``
(workflow/schemas/config.schema.yaml). This module only reads and checks; ``spectral_collapse.store`` turns what
it reads into the same Zarr store the WorldClim source gives, so everything downstream is unchanged.

Every refusal names the file, layer or column, and the fix. Relative paths are taken from the repository root
(the folder of the Snakefile), so a preset means the same files whatever the working directory (``-d``).
"""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from spectral_collapse.provenance import sha256_file

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


class SourceError(RuntimeError):
    """Unusable input data; the message names the file, layer or column and the fix."""


@dataclass(frozen=True)
class Variables:
    """Names, long names and units of the input variables, in store order."""

    names: tuple[str, ...]
    long_names: tuple[str, ...]
    units: tuple[str, ...]


@dataclass(frozen=True)
class GridStack:
    """Layers on one geographic grid: data (d, lat, lon) float32 with NaN where a layer has no value."""

    data: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    variables: Variables
    crs: str


@dataclass(frozen=True)
class TableData:
    """Rows of a table with no missing value: x (n, d) float64, weights (n,), groups (n,) or None."""

    x: np.ndarray
    weights: np.ndarray
    groups: np.ndarray | None
    variables: Variables
    n_dropped: int
    n_rows_read: int


def source_kind(data: Mapping[str, Any]) -> str:
    """The configured kind of source (data.source; the validated config always holds it)."""
    return str(data["source"])


def resolve(path: str | os.PathLike, root: str | os.PathLike, key: str) -> Path:
    """An existing configured path, relative ones taken from `root`; else a SourceError naming `key`."""
    p = Path(os.path.expanduser(str(path)))
    p = p if p.is_absolute() else Path(root) / p
    if not p.exists():
        raise SourceError(f"config key {key}: {p} does not exist; set {key} to your data's path "
                          f"(relative paths are taken from {Path(root).resolve()}).")
    return p


def _natural(name: str) -> list:
    """Sort key that puts layer2 before layer10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _stem(name: str) -> str:
    """A layer's default variable name: its file name without the last suffix (wc2.1_10m_bio_1.tif -> wc2.1_10m_bio_1)."""
    return Path(name).stem


# --------------------------------------------------------------------------- which files


def raster_members(settings: Mapping[str, Any], root: str | os.PathLike) -> list[tuple[str, str, Path]]:
    """(layer file name, the path GDAL opens, the file on disk to checksum) per layer, in layer order.

    ``data.raster.path`` is a folder or a zip; ``files`` lists the layers in it (else every name matching
    ``pattern``, in natural order)."""
    base = resolve(settings["path"], root, "data.raster.path")
    listed = settings.get("files")
    pattern = settings.get("pattern", "*.tif")
    if zipfile.is_zipfile(base):
        with zipfile.ZipFile(base) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/")]
        if listed:
            missing = [f for f in listed if f not in members]
            if missing:
                raise SourceError(f"{base}: holds no {missing[0]!r} (config key data.raster.files); it holds "
                                  f"{sorted(members, key=_natural)[:8]}...")
            chosen = list(listed)
        else:
            chosen = sorted((m for m in members if fnmatch.fnmatch(Path(m).name, pattern)), key=_natural)
        return [(m, f"/vsizip/{base.resolve()}/{m}", base) for m in chosen]
    if base.is_dir():
        if listed:
            for f in listed:
                if not (base / f).is_file():
                    raise SourceError(f"config key data.raster.files: {base / f} does not exist; fix the list or "
                                      "add the file.")
            chosen = list(listed)
        else:
            chosen = sorted((p.name for p in base.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern)),
                            key=_natural)
        return [(f, str(base / f), base / f) for f in chosen]
    raise SourceError(f"config key data.raster.path: {base} is neither a folder nor a zip archive; point it at "
                      "the folder (or zip) that holds one single-band raster per variable.")


def source_files(data: Mapping[str, Any], root: str | os.PathLike) -> dict[str, Path]:
    """Every file a raster or table source reads, by the name its checksum is recorded under (a mask as
    "mask/<name>"); none for WorldClim (its files are found, and checked against pinned checksums, at run time).
    A configured path that does not exist is refused, naming its key."""
    kind = source_kind(data)
    if kind == "raster":
        files = {disk.name: disk for _, _, disk in raster_members(data["raster"], root)}
        if data["raster"].get("mask"):
            mask = resolve(data["raster"]["mask"], root, "data.raster.mask")
            files[f"mask/{mask.name}"] = mask
        return dict(sorted(files.items()))
    if kind == "table":
        path = resolve(data["table"]["path"], root, "data.table.path")
        return {path.name: path}
    return {}


def source_paths(data: Mapping[str, Any], root: str | os.PathLike) -> list[str]:
    """The files of ``source_files`` as paths (rule hash_source's inputs)."""
    return [str(p) for p in source_files(data, root).values()]


def n_variables(data: Mapping[str, Any], root: str | os.PathLike, store_description: str | os.PathLike | None = None) -> int:
    """How many input variables the configured source has (the linear family's latent count when
    models.linear.latents is null). A raster folder is listed (cheap); where it is not at hand (a redraw on another
    machine), the store's description says."""
    kind = source_kind(data)
    if kind == "worldclim":
        from spectral_collapse.worldclim import N_BIO  # worldclim imports this module

        return N_BIO
    if kind == "table":
        return len(data["table"]["columns"])
    if data["raster"].get("files"):
        return len(data["raster"]["files"])
    try:
        return len(raster_members(data["raster"], root))
    except SourceError:
        if store_description is not None and Path(store_description).is_file():
            import json

            return len(json.loads(Path(store_description).read_text())["variables"])
        raise


def source_checksums(data: Mapping[str, Any], root: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every file the configured raster or table source reads (the data's identity)."""
    if source_kind(data) == "worldclim":
        raise ValueError("data.source 'worldclim' has no generic checksums (WorldClim's are pinned)")
    return {name: sha256_file(path) for name, path in source_files(data, root).items()}


# --------------------------------------------------------------------------- rasters


def _open(gdal_path: str, label: str) -> Any:
    import rioxarray  # noqa: F401  (registers .rio)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            da = rioxarray.open_rasterio(gdal_path, mask_and_scale=True, cache=False, lock=False)
            _ = da.rio.transform()
    except Exception as exc:  # rasterio raises several types for unreadable files
        raise SourceError(f"{label}: not a raster GDAL can read ({exc}); check the file or drop it from "
                          "data.raster.files.") from exc
    if da.sizes.get("band", 1) != 1:
        raise SourceError(f"{label}: {da.sizes['band']} bands; each layer must be one single-band raster "
                          "(split it, e.g. gdal_translate -b N).")
    return da


def _grid_of(da: Any) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = da.rio.transform()
    return tuple(da.shape[-2:]), tuple(round(v, 9) for v in t[:6]), da.rio.crs


def _same_grid(da: Any, label: str, ref: tuple, ref_label: str) -> None:
    shape, transform, crs = _grid_of(da)
    problems = []
    if not _same_crs(crs, ref[2]):
        problems.append(f"CRS {crs} (not {ref[2]})")
    if shape != ref[0]:
        problems.append(f"shape {shape[0]}x{shape[1]} (not {ref[0][0]}x{ref[0][1]})")
    if shape == ref[0] and not np.allclose(transform, ref[1], atol=1e-7):
        problems.append(f"transform {transform} (not {ref[1]})")
    if problems:
        raise SourceError(f"{label} is on another grid than {ref_label}: {'; '.join(problems)}. All layers must "
                          "share one grid: resample them onto it first (e.g. gdalwarp -t_srs, -tr and -te of "
                          f"{ref_label}).")


def _same_crs(a: Any, b: Any) -> bool:
    """One CRS however it is written (an ESRI .prj's WGS84 WKT is EPSG:4326)."""
    if a is None or b is None:
        return a is None and b is None
    from pyproj import CRS

    return CRS.from_user_input(a.to_wkt()).equals(CRS.from_user_input(b.to_wkt()), ignore_axis_order=True)


def _check_mapping_keys(settings: Mapping[str, Any], stems: Sequence[str], names: Sequence[str]) -> None:
    """A key of a per-layer mapping that names no layer is a typo that would leave a layer unscaled or unnamed."""
    known = {"names": set(stems)}
    for key in ("scale", "offset", "units", "long_names"):
        known[key] = set(names)
    for key, allowed in known.items():
        value = settings.get(key)
        unknown = sorted(set(value) - allowed) if isinstance(value, Mapping) else []
        if unknown:
            what = "file stems" if key == "names" else "variable names"
            raise SourceError(f"config key data.raster.{key}: {unknown} match none of the layers' {what} "
                              f"({sorted(allowed, key=_natural)}); fix the keys.")


def _per_layer(value: Any, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, Mapping):
        return float(value.get(name, default))
    return float(value)


def read_raster_stack(settings: Mapping[str, Any], root: str | os.PathLike) -> GridStack:
    """Read every layer (nodata masked, the file's own scale/offset and then data.raster.scale/offset applied),
    cropped to data.raster.bbox and masked by data.raster.mask; checked to share one geographic grid."""
    members = raster_members(settings, root)
    if not members:
        raise SourceError(f"config key data.raster.pattern: no file in {settings['path']} matches "
                          f"{settings.get('pattern', '*.tif')!r}; set the pattern or list data.raster.files.")
    names_map = dict(settings.get("names") or {})
    layers = [(_stem(f), gdal, f) for f, gdal, _ in members]
    _check_mapping_keys(settings, [stem for stem, _, _ in layers], [str(names_map.get(stem, stem)) for stem, _, _ in layers])
    first = _open(layers[0][1], layers[0][2])
    ref = _grid_of(first)
    if ref[2] is None or not ref[2].is_geographic:
        raise SourceError(f"{layers[0][2]}: CRS {ref[2]} is not geographic (longitude/latitude); reproject the "
                          "stack to EPSG:4326 (gdalwarp -t_srs EPSG:4326) so that cell areas and equal-area "
                          "blocks are computed on the sphere.")
    lat = first["y"].values.astype(np.float64)
    lon = first["x"].values.astype(np.float64)
    first.close()
    keep_y, keep_x = np.ones(lat.size, bool), np.ones(lon.size, bool)
    if settings.get("bbox"):
        west, south, east, north = (float(v) for v in settings["bbox"])
        keep_y, keep_x = (lat >= south) & (lat <= north), (lon >= west) & (lon <= east)
        if not keep_y.any() or not keep_x.any():
            raise SourceError(f"config key data.raster.bbox {settings['bbox']} holds no cell of the grid "
                              f"(lon {lon.min():g}..{lon.max():g}, lat {lat.min():g}..{lat.max():g}); "
                              "give [west, south, east, north] in degrees.")
    iy, ix = np.flatnonzero(keep_y), np.flatnonzero(keep_x)
    window = (slice(iy[0], iy[-1] + 1), slice(ix[0], ix[-1] + 1))
    data = np.empty((len(layers), iy.size, ix.size), dtype=np.float32)
    user_nodata = settings.get("nodata")
    names: list[str] = []
    for i, (stem, gdal, label) in enumerate(layers):
        da = _open(gdal, label)
        try:
            _same_grid(da, label, ref, layers[0][2])
            values = np.asarray(da.values[0][window], dtype=np.float64)
        finally:
            da.close()
        name = str(names_map.get(stem, stem))
        if user_nodata is not None:
            values[values == float(user_nodata)] = np.nan
        values = values * _per_layer(settings.get("scale"), name, 1.0) + _per_layer(settings.get("offset"), name, 0.0)
        if not np.isfinite(values).any():
            raise SourceError(f"{label}: every cell is nodata{' inside data.raster.bbox' if settings.get('bbox') else ''}; "
                              "drop the layer from data.raster.files (or fix its nodata value).")
        data[i] = values.astype(np.float32)
        names.append(name)
    if len(set(names)) != len(names):
        raise SourceError(f"data.raster: two layers share a name ({names}); give unique names in data.raster.names.")
    if settings.get("mask"):
        mask_path = resolve(settings["mask"], root, "data.raster.mask")
        da = _open(str(mask_path), str(mask_path))
        try:
            _same_grid(da, str(mask_path), ref, layers[0][2])
            m = np.asarray(da.values[0][window], dtype=np.float64)
        finally:
            da.close()
        data[:, ~(np.isfinite(m) & (m != 0))] = np.nan
    if not np.isfinite(data).all(axis=0).any():
        raise SourceError(f"data.raster: no cell has a value in every layer{' and the mask' if settings.get('mask') else ''}"
                          f"{' inside the bbox' if settings.get('bbox') else ''}; check that the layers cover one area "
                          "(and data.raster.mask / data.raster.bbox).")
    return GridStack(data, lat[window[0]], lon[window[1]], _variables(names, settings), str(ref[2]))


def _variables(names: Sequence[str], settings: Mapping[str, Any]) -> Variables:
    long_names = dict(settings.get("long_names") or {})
    units = settings.get("units") or {}
    unit_of = (lambda n: str(units.get(n, ""))) if isinstance(units, Mapping) else (lambda n: str(units))  # noqa: E731
    return Variables(tuple(names), tuple(str(long_names.get(n, n)) for n in names), tuple(unit_of(n) for n in names))


# --------------------------------------------------------------------------- tables


def _read_frame(path: Path) -> Any:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except Exception as exc:
        raise SourceError(f"{path}: cannot be read as {suffix[1:]} ({exc}); check the file.") from exc
    raise SourceError(f"config key data.table.path: {path} is not a {' / '.join(TABLE_SUFFIXES)} file; "
                      "save the table as CSV or Parquet.")


def read_table(settings: Mapping[str, Any], root: str | os.PathLike) -> TableData:
    """The chosen numeric columns, the weight and the group of every row without a missing value."""
    import pandas as pd

    path = resolve(settings["path"], root, "data.table.path")
    frame = _read_frame(path)
    columns = list(settings["columns"])
    extra = [c for c in (settings.get("weight"), settings.get("group")) if c]
    both = [c for c in extra if c in columns]
    if both:
        raise SourceError(f"{path}: column {both[0]!r} is both an input (data.table.columns) and the "
                          f"{'weight' if both[0] == settings.get('weight') else 'group'} column; drop it from one of them.")
    missing = [c for c in columns + extra if c not in frame.columns]
    if missing:
        raise SourceError(f"{path}: no column {missing[0]!r} (config data.table); its columns are "
                          f"{list(frame.columns)[:20]}.")
    for c in columns + ([settings["weight"]] if settings.get("weight") else []):  # the numeric columns
        if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]):
            raise SourceError(f"{path}: column {c!r} is not numeric ({frame[c].dtype}); drop it from "
                              "data.table.columns or convert it to numbers.")
    used = frame[columns + extra]
    numeric = columns + ([settings["weight"]] if settings.get("weight") else [])
    complete = np.isfinite(used[numeric].to_numpy(np.float64)).all(axis=1)  # NaN and inf in the numbers
    if settings.get("group"):
        complete &= used[settings["group"]].notna().to_numpy()
    kept = used[complete]
    if kept.empty:
        raise SourceError(f"{path}: every row has a missing value in {columns + extra}; check the columns.")
    x = kept[columns].to_numpy(np.float64)
    flat = [c for c, s in zip(columns, x.std(axis=0)) if not s > 0]
    if flat:
        raise SourceError(f"{path}: column {flat[0]!r} is constant over the rows used; it carries no variation: "
                          "drop it from data.table.columns.")
    if settings.get("weight"):
        w = kept[settings["weight"]].to_numpy(np.float64)
        if (w < 0).any():
            raise SourceError(f"{path}: weight column {settings['weight']!r} has {(w < 0).sum()} negative values "
                              f"(e.g. {w[w < 0][0]:g}); weights must be >= 0: fix the column or set "
                              "data.table.weight to null.")
        if not w.sum() > 0:
            raise SourceError(f"{path}: weight column {settings['weight']!r} sums to 0; fix the column.")
    else:
        w = np.ones(len(kept))
    groups = kept[settings["group"]].to_numpy() if settings.get("group") else None
    return TableData(x, w, groups, _variables(columns, settings), int((~complete).sum()), int(len(frame)))
