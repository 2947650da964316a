"""Spherical geometry of a regular latitude/longitude grid: cell areas and equal-area spatial blocks.

Cells shrink toward the poles (area ~ cos latitude), so both the sampling weights and the blocks
used for the spatial split are built from true areas, not from cell counts.
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius


def cell_edges(centres: np.ndarray) -> np.ndarray:
    """Edges (n+1) of a regular 1-D grid from its n cell centres (either direction)."""
    centres = np.asarray(centres, dtype=np.float64)
    step = centres[1] - centres[0]
    return np.concatenate([centres - step / 2, centres[-1:] + step / 2])


def cell_area_km2(lat: np.ndarray, lon: np.ndarray, radius: float = EARTH_RADIUS_KM) -> np.ndarray:
    """Exact spherical area (km2) of each cell of a regular lat/lon grid, shape (lat, lon).

    A cell between latitudes phi1, phi2 and of width dlon has area R^2 dlon |sin phi2 - sin phi1|.
    """
    lat_edges = np.deg2rad(np.clip(cell_edges(lat), -90.0, 90.0))
    dlon = np.deg2rad(np.abs(np.diff(cell_edges(lon))))
    band = np.abs(np.diff(np.sin(lat_edges)))
    return (radius**2) * np.outer(band, dlon)


def equal_area_blocks(lat: np.ndarray, lon: np.ndarray, block_km: float, radius: float = EARTH_RADIUS_KM) -> np.ndarray:
    """Global block id (int64, shape (lat, lon)) of every cell, for blocks of about block_km x block_km.

    Latitude bands of height ~block_km (180 degrees split into round(pi R / block_km) equal bands);
    each band is cut into n equal longitude sectors with n = round(band area / block_km^2) (at
    least 1), so every block in a band has the same area, close to block_km^2, and block width
    grows toward the poles in degrees but stays ~block_km on the ground. Cells are assigned by
    their centre. Ids run north to south, west to east.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    n_bands = max(1, int(round(np.pi * radius / block_km)))
    band_edges = np.linspace(-90.0, 90.0, n_bands + 1)
    band_of_lat = np.clip(n_bands - 1 - np.searchsorted(band_edges, lat, side="right") + 1, 0, n_bands - 1)
    # band 0 is the northernmost
    band_area = 2 * np.pi * radius**2 * np.diff(np.sin(np.deg2rad(band_edges)))[::-1]
    n_sectors = np.maximum(1, np.rint(band_area / block_km**2)).astype(np.int64)
    first_id = np.concatenate([[0], np.cumsum(n_sectors)[:-1]])
    frac = np.clip((lon + 180.0) / 360.0, 0.0, np.nextafter(1.0, 0.0))
    sector = np.floor(frac[None, :] * n_sectors[band_of_lat][:, None]).astype(np.int64)
    return first_id[band_of_lat][:, None] + sector
