"""The Zarr store on the real rasters: layout, land cells, standardization, the spatial-block split,
and bad inputs that must fail with a named file and leave no store behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from spectral_collapse import geo
from spectral_collapse.store import SPLIT_CODES, build_store, load_split, open_store, store_V
from spectral_collapse.worldclim import BIO_FILES, WorldClimError

N_LAND = 808_053


@pytest.fixture(scope="module")
def ds(real_store: Path) -> xr.Dataset:
    return xr.open_zarr(real_store, consolidated=True)


def test_open_zarr_layout(real_store: Path, ds: xr.Dataset, store_settings: dict) -> None:
    assert (real_store / ".zmetadata").is_file() and (real_store / ".zgroup").is_file()  # zarr v2, consolidated
    assert ds["layers"].dims == ("variable", "lat", "lon") and ds["layers"].dtype == np.float32
    assert ds["layers"].shape == (19, 1080, 2160)
    assert ds["layers"].encoding["chunks"] == tuple(store_settings["tile"])
    assert ds["land_mask"].encoding["chunks"] == tuple(store_settings["tile"][1:])
    assert ds["lat"].values[0] > ds["lat"].values[-1] and ds["lon"].values[0] < ds["lon"].values[-1]
    assert ds["lat"].attrs["standard_name"] == "latitude" and ds["lon"].attrs["units"] == "degrees_east"
    assert ds["cell_area"].attrs["standard_name"] == "cell_area" and ds["cell_area"].attrs["units"] == "km2"
    assert ds["block"].dtype == np.int32 and ds["split"].dtype == np.int8


def test_variable_metadata(ds: xr.Dataset) -> None:
    meta = {str(v): (str(ln), str(u)) for v, ln, u in zip(ds["variable"].values, ds["long_name"].values, ds["units"].values)}
    assert list(meta) == [f"bio{i}" for i in range(1, 20)]
    assert meta["bio1"] == ("Annual Mean Temperature", "degC")
    assert meta["bio3"][1] == "%" and meta["bio15"][1] == "%" and meta["bio4"][1] == "degC"
    assert meta["bio4"][0].startswith("Temperature Seasonality")
    assert all(meta[f"bio{i}"][1] == "degC" for i in range(5, 12))
    assert all(meta[f"bio{i}"][1] == "mm" for i in (12, 13, 14, 16, 17, 18, 19))


def test_land_cells(ds: xr.Dataset) -> None:
    land = ds["land_mask"].values
    assert int(land.sum()) == N_LAND == ds.attrs["n_land"]
    bio = ds["layers"].values
    assert np.isfinite(bio[:, land]).all() and np.isnan(bio[:, ~land]).all()
    split = ds["split"].values
    assert ((split >= 0) == land).all() and ((ds["block"].values >= 0) == land).all()
    cells = ds.attrs["cells_per_split"]
    assert sum(cells.values()) == N_LAND
    assert ds.sizes["validation_sample"] == cells["validation"] and ds.sizes["test_sample"] == cells["test"]


def test_cell_area_is_the_sphere(ds: xr.Dataset) -> None:
    total = float(ds["cell_area"].values.astype(np.float64).sum())
    assert total == pytest.approx(4 * np.pi * geo.EARTH_RADIUS_KM**2, rel=1e-5)


def test_train_sample_standardized(real_store: Path, ds: xr.Dataset, store_settings: dict) -> None:
    x = load_split(real_store, "train").astype(np.float64)
    assert x.shape == (store_settings["n_train"], 19)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.var(axis=0), 1.0, atol=1e-5)
    assert store_V(real_store) == pytest.approx(19.0, abs=1e-4)
    # the stored statistics reproduce the stored sample from the raw rasters
    rows, cols = ds["train_row"].values, ds["train_col"].values
    raw = ds["layers"].values[:, rows[:500], cols[:500]].T
    np.testing.assert_allclose((raw - ds["mean"].values) / ds["std"].values, x[:500], atol=1e-4)


def test_load_split_contract(real_store: Path) -> None:
    for split in ("validation", "test"):
        x = load_split(real_store, split)
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 19 and np.isfinite(x).all()
    with pytest.raises(ValueError, match="split must be one of"):
        load_split(real_store, "holdout")
    with pytest.raises(FileNotFoundError, match="no Zarr store"):
        open_store(real_store.parent / "absent.zarr")


def test_heldout_blocks_never_share_a_block_with_training(ds: xr.Dataset) -> None:
    block, split = ds["block"].values, ds["split"].values
    blocks = {name: set(np.unique(block[split == code]).tolist()) for name, code in SPLIT_CODES.items()}
    assert not blocks["train"] & blocks["validation"]
    assert not blocks["train"] & blocks["test"]
    assert not blocks["validation"] & blocks["test"]
    assert len(blocks["validation"]) == len(blocks["test"]) > 0
    n = ds.attrs["n_blocks"]
    assert sum(len(b) for b in blocks.values()) == n
    # the training sample itself comes only from training blocks, and the held-out arrays from theirs
    assert (split[ds["train_row"].values, ds["train_col"].values] == 0).all()
    assert (split[ds["test_row"].values, ds["test_col"].values] == 2).all()
    assert (split[ds["validation_row"].values, ds["validation_col"].values] == 1).all()


def test_blocks_are_about_equal_area(ds: xr.Dataset, store_settings: dict) -> None:
    ids = geo.equal_area_blocks(ds["lat"].values, ds["lon"].values, store_settings["block_km"])
    areas = np.bincount(ids.ravel(), weights=ds["cell_area"].values.astype(np.float64).ravel())
    target = store_settings["block_km"] ** 2
    assert np.median(areas) == pytest.approx(target, rel=0.05)
    assert np.quantile(areas, 0.05) > 0.5 * target and np.quantile(areas, 0.95) < 1.5 * target


def test_training_sample_is_area_weighted(ds: xr.Dataset) -> None:
    """High latitudes (small cells) are drawn less often per cell than the tropics."""
    rows = ds["train_row"].values
    lat = np.abs(ds["lat"].values[rows])
    split = ds["split"].values
    train_lat = np.abs(np.broadcast_to(ds["lat"].values[:, None], split.shape)[split == 0])
    assert np.mean(lat > 60) < 0.8 * np.mean(train_lat > 60)


# --------------------------------------------------------------------------- bad inputs


def _linked(worldclim_dir: Path, folder: Path, skip: tuple[str, ...] = ()) -> Path:
    folder.mkdir()
    for name in BIO_FILES:
        if name not in skip:
            (folder / name).symlink_to(worldclim_dir / name)
    return folder


def _assert_no_store(out: Path) -> None:
    assert not out.exists()
    assert list(out.parent.iterdir()) == [], "temporary build left behind"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    (tmp_path / "results").mkdir()
    return tmp_path / "results" / "worldclim.zarr"


def test_raster_on_another_grid(worldclim_dir: Path, tmp_path: Path, out: Path, store_settings: dict) -> None:
    import rasterio
    from affine import Affine

    folder = _linked(worldclim_dir, tmp_path / "wc", skip=("wc2.1_10m_bio_9.tif",))
    profile = dict(driver="GTiff", width=1080, height=540, count=1, dtype="float32", crs="EPSG:4326",
                   transform=Affine(1 / 3, 0, -180, 0, -1 / 3, 90), nodata=-3.4e38)
    with rasterio.open(folder / "wc2.1_10m_bio_9.tif", "w", **profile) as dst:
        dst.write(np.zeros((1, 540, 1080), dtype=np.float32))
    with pytest.raises(WorldClimError, match=r"wc2\.1_10m_bio_9\.tif is on another grid.*shape 540x1080.*Replace"):
        build_store(folder, out, store_settings)
    _assert_no_store(out)


def test_corrupt_geotiff(worldclim_dir: Path, tmp_path: Path, out: Path, store_settings: dict) -> None:
    folder = _linked(worldclim_dir, tmp_path / "wc", skip=("wc2.1_10m_bio_2.tif",))
    (folder / "wc2.1_10m_bio_2.tif").write_bytes(b"II*\0" + b"garbage" * 1000)
    with pytest.raises(WorldClimError, match=r"wc2\.1_10m_bio_2\.tif: not a readable GeoTIFF.*Replace"):
        build_store(folder, out, store_settings)
    _assert_no_store(out)


def test_truncated_geotiff_pixels(worldclim_dir: Path, tmp_path: Path, out: Path, store_settings: dict) -> None:
    folder = _linked(worldclim_dir, tmp_path / "wc", skip=("wc2.1_10m_bio_19.tif",))
    data = (worldclim_dir / "wc2.1_10m_bio_19.tif").read_bytes()
    (folder / "wc2.1_10m_bio_19.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(WorldClimError, match=r"wc2\.1_10m_bio_19\.tif"):
        build_store(folder, out, store_settings)
    _assert_no_store(out)


def test_folder_with_18_files(worldclim_dir: Path, tmp_path: Path, out: Path, store_settings: dict) -> None:
    folder = _linked(worldclim_dir, tmp_path / "wc", skip=("wc2.1_10m_bio_4.tif",))
    with pytest.raises(WorldClimError, match=r"missing: wc2\.1_10m_bio_4\.tif"):
        build_store(folder, out, store_settings)
    _assert_no_store(out)


def test_empty_folder(tmp_path: Path, out: Path, store_settings: dict) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorldClimError, match="holds none of the 19 GeoTIFFs"):
        build_store(tmp_path / "empty", out, store_settings)
    _assert_no_store(out)


def test_failure_while_writing_leaves_no_store(worldclim_dir: Path, out: Path, store_settings: dict, monkeypatch) -> None:
    """A crash halfway through writing the Zarr leaves nothing that looks like a store."""
    real_to_zarr = xr.Dataset.to_zarr

    def crash(self, store, *args, **kwargs):
        real_to_zarr(self[["land_mask"]], store, *args, **{**kwargs, "encoding": {}})
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(xr.Dataset, "to_zarr", crash)
    with pytest.raises(OSError, match="simulated"):
        build_store(worldclim_dir, out, store_settings)
    _assert_no_store(out)
