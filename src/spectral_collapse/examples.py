"""The table example (issue 20): a point table of the kind species-distribution modellers hold, generated from
WorldClim 2.1 (no download: the verified local copy). One row per sampled land cell: the 19 bioclimatic values,
its coordinates, its cell area as the row weight and a 10-degree tile as the split group.

    python -m spectral_collapse.examples resources/examples/worldclim_points.csv   # WORLDCLIM_DIR set
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from spectral_collapse import geo
from spectral_collapse.provenance import atomic_path

N_POINTS = 20_000
TILE_DEG = 10.0


def worldclim_points(raster_dir: str | os.PathLike, n: int = N_POINTS, seed: int = 0) -> pd.DataFrame:
    """`n` land cells drawn uniformly (without replacement) with their values, coordinates, area and tile."""
    from spectral_collapse.worldclim import read_rasters

    stack = read_rasters(raster_dir)
    valid = np.isfinite(stack.data).all(axis=0)
    rows, cols = np.nonzero(valid)
    pick = np.sort(np.random.default_rng(seed).choice(rows.size, size=int(n), replace=False))
    r, c = rows[pick], cols[pick]
    area = geo.cell_area_km2(stack.lat, stack.lon)[r, c]
    lat, lon = stack.lat[r], stack.lon[c]
    table = pd.DataFrame({name: stack.data[i, r, c] for i, name in enumerate(stack.variables.names)})
    tile = [f"{a:+d}_{b:+d}" for a, b in zip(np.floor(lat / TILE_DEG).astype(int), np.floor(lon / TILE_DEG).astype(int))]
    return table.assign(lat=lat, lon=lon, cell_area_km2=area, tile=tile)


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


if __name__ == "__main__":
    from spectral_collapse.worldclim import ENV_VAR, locate_rasters, resolve_local_source

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "resources/examples/worldclim_points.csv")
    if out.is_file():
        print(f"{out} exists; delete it to generate it again")
        sys.exit(0)
    from spectral_collapse.config import schema_defaults

    data = schema_defaults("data")  # the study's own download location and URL when WORLDCLIM_DIR is unset
    local = resolve_local_source(None, os.environ.get(ENV_VAR))
    folder, _, _ = locate_rasters(local, data["url"], data["download_dir"])
    write_csv(worldclim_points(folder), out)
    print(f"wrote {out}: {N_POINTS} WorldClim 2.1 land cells (19 variables, lat, lon, cell_area_km2, tile)")
