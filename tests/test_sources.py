"""Issue 20: the user's own data. A raster stack (GeoTIFFs written here, and WorldClim 1.4's BIL zip from ../shared)
and a table (CSV, Parquet) build the same store contract as WorldClim 2.1; every bad input is refused with the
file, layer or column named and nothing left at the store's path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from spectral_collapse.config import ConfigError, load_config
from spectral_collapse.pca import pca
from spectral_collapse.sources import SourceError, read_raster_stack, source_checksums, source_paths
from spectral_collapse.store import build_source_store, load_split, load_weights, store_V

REPO = Path(__file__).resolve().parents[1]
WC14_BIO = REPO.parent / "shared" / "worldclim" / "wc1.4_10m_bio" / "wc1.4_10m_bio_bil.zip"
SETTINGS = {"tile": [4, 32, 32], "block_km": 500, "heldout_fraction": 0.2, "split_seed": 0, "n_train": 4000}


def _grid(ny: int = 60, nx: int = 120, res: float = 1.0, west: float = -60.0, north: float = 30.0):
    from rasterio.transform import from_origin

    return from_origin(west, north, res, res), (ny, nx)


def _write(path: Path, values: np.ndarray, transform, crs: str = "EPSG:4326", nodata: float = -9999.0) -> Path:
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=values.shape[0], width=values.shape[1], count=1,
                       dtype=values.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(values, 1)
    return path


def _stack(folder: Path, d: int = 4, seed: int = 0) -> Path:
    """d correlated int16 layers (x10 encoded) on a 1-degree grid, the sea (left columns) as nodata."""
    folder.mkdir(parents=True, exist_ok=True)
    transform, (ny, nx) = _grid()
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(3, ny, nx))
    for i in range(d):
        v = (base[0] * (i + 1) + base[1] * (d - i) + 0.3 * base[2] * i + rng.normal(scale=0.2, size=(ny, nx))) * 10
        v = v.astype(np.int16)
        v[:, :10] = -9999
        _write(folder / f"layer{i + 1}.tif", v, transform)
    return folder


def _raster_data(folder: Path, **extra) -> dict:
    return {"source": "raster", "raster": {"path": str(folder), "pattern": "*.tif", "scale": 0.1, **extra}}


def _table(path: Path, n: int = 6000, seed: int = 0, **columns) -> Path:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    frame = pd.DataFrame({"a": z[:, 0], "b": z[:, 0] + 0.5 * z[:, 1], "c": z[:, 1] - 0.2 * z[:, 0] + rng.normal(size=n) * 0.1,
                          "w": rng.uniform(0.5, 2.0, size=n), "site": np.repeat(np.arange(n // 50), 50)[:n], **columns})
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


def _table_data(path: Path, **extra) -> dict:
    return {"source": "table", "table": {"path": str(path), "columns": ["a", "b", "c"], "weight": None, "group": None,
                                         "block_rows": 50, **extra}}


def _build(data: dict, out: Path, min_rows: int = 256) -> dict:
    return build_source_store(data, REPO, out, SETTINGS, min_rows, source_checksums(data, REPO))


# --------------------------------------------------------------------------- rasters


def test_raster_stack_builds_the_store_contract(tmp_path: Path) -> None:
    folder = _stack(tmp_path / "stack", d=4)
    out = tmp_path / "store.zarr"
    description = _build(_raster_data(folder, names={"layer1": "t_mean"}, units="degC"), out)
    with xr.open_zarr(out, consolidated=True) as ds:
        assert list(ds["variable"].values) == ["t_mean", "layer2", "layer3", "layer4"]  # names from files, or mapped
        assert list(ds["units"].values) == ["degC"] * 4
        assert ds["layers"].shape == (4, 60, 120)
        land = ds["land_mask"].values
        assert not land[:, :10].any() and land[:, 10:].all()  # nodata masked
        raw = ds["layers"].values[0][land]
    import rasterio

    with rasterio.open(folder / "layer1.tif") as src:
        encoded = src.read(1)[:, 10:]
    np.testing.assert_allclose(raw, (encoded.astype(np.float64) * 0.1).ravel(), rtol=1e-6)  # scale applied
    assert store_V(out) == pytest.approx(4.0, rel=1e-6)
    x = load_split(out, "train")
    assert x.shape == (4000, 4) and np.allclose(x.mean(0), 0, atol=1e-5)
    assert description["variables"] == ["t_mean", "layer2", "layer3", "layer4"]
    assert load_weights(out, "test").min() > 0  # held-out rows weigh their cell area


def test_raster_bbox_and_mask(tmp_path: Path) -> None:
    folder = _stack(tmp_path / "stack", d=3)
    transform, (ny, nx) = _grid()
    mask = np.ones((ny, nx), dtype=np.uint8)
    mask[:20] = 0
    _write(tmp_path / "mask.tif", mask, transform, nodata=255)
    out = tmp_path / "store.zarr"
    _build(_raster_data(folder, bbox=[-40.0, -30.0, 50.0, 30.0], mask=str(tmp_path / "mask.tif")), out)
    with xr.open_zarr(out, consolidated=True) as ds:
        assert ds["land_mask"].shape == (60, 90)  # lat -30..30, lon -40..50 at 1 degree: the window, no cell more or less
        assert (float(ds["lon"][0]), float(ds["lon"][-1])) == (-39.5, 49.5)
        assert (float(ds["lat"][0]), float(ds["lat"][-1])) == (29.5, -29.5)
        land = ds["land_mask"].values
        lat = ds["lat"].values
        assert not land[lat > 30 - 20].any()  # the mask's zero rows are left out
        assert land[lat < 5].all()


def test_wc14_bil_zip_reads_in_place() -> None:
    stack = read_raster_stack({"path": str(WC14_BIO), "pattern": "*.bil", "scale": {"bio1": 0.1}}, REPO)
    assert stack.data.shape == (19, 900, 2160)
    assert stack.variables.names[:3] == ("bio1", "bio2", "bio3") and stack.variables.names[-1] == "bio19"  # natural order
    assert stack.lat.max() < 90 and stack.lat.min() > -60  # the 60S-90N grid
    valid = np.isfinite(stack.data[0])
    assert int(valid.sum()) == 584521  # PROVENANCE.md: valid pixels of bio1; nodata -9999 masked
    assert np.nanmin(stack.data[0]) == pytest.approx(-26.9) and np.nanmax(stack.data[0]) == pytest.approx(31.4)


def test_dotted_file_names_keep_their_stem(tmp_path: Path) -> None:
    folder = tmp_path / "dotted"
    folder.mkdir()
    transform, (ny, nx) = _grid()
    rng = np.random.default_rng(3)
    for i in range(3):
        _write(folder / f"chelsa_V.2.1_bio{i + 1}.tif", (rng.normal(size=(ny, nx)) * 100).astype(np.int16), transform)
    stack = read_raster_stack({"path": str(folder), "names": {"chelsa_V.2.1_bio3": "bio3"}}, REPO)
    assert stack.variables.names == ("chelsa_V.2.1_bio1", "chelsa_V.2.1_bio2", "bio3")


def test_unknown_mapping_keys_are_refused(tmp_path: Path) -> None:
    folder = _stack(tmp_path / "stack", d=2)
    with pytest.raises(SourceError, match=r"data\.raster\.scale: \['layr1'\] match none of the layers"):
        read_raster_stack({"path": str(folder), "scale": {"layr1": 0.1}}, REPO)
    with pytest.raises(SourceError, match=r"data\.raster\.names: \['layer3'\] match none"):
        read_raster_stack({"path": str(folder), "names": {"layer3": "x"}}, REPO)


def test_one_crs_written_two_ways_is_one_grid(tmp_path: Path) -> None:
    """An ESRI .prj's WGS84 (a WKT without the EPSG code) is EPSG:4326: not refused as another CRS."""
    from rasterio.crs import CRS

    folder = _stack(tmp_path / "stack", d=2)
    transform, (ny, nx) = _grid()
    esri = CRS.from_wkt('GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],'
                        'PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]')
    _write(folder / "layer3.tif", np.ones((ny, nx), np.int16), transform, crs=esri)
    assert read_raster_stack({"path": str(folder)}, REPO).data.shape == (3, ny, nx)


def test_rasters_on_different_grids_are_refused(tmp_path: Path) -> None:
    folder = _stack(tmp_path / "stack", d=3)
    transform, _ = _grid(res=0.5)
    _write(folder / "layer9.tif", np.zeros((60, 120), np.int16), transform)
    out = tmp_path / "store.zarr"
    with pytest.raises(SourceError, match=r"layer9\.tif is on another grid.*transform.*resample"):
        _build(_raster_data(folder), out)
    assert not out.exists()


def test_rasters_in_another_crs_are_refused(tmp_path: Path) -> None:
    folder = _stack(tmp_path / "stack", d=3)
    transform, _ = _grid()
    _write(folder / "layer9.tif", np.zeros((60, 120), np.int16), transform, crs="EPSG:4269")
    with pytest.raises(SourceError, match=r"layer9\.tif is on another grid.*CRS"):
        _build(_raster_data(folder), tmp_path / "store.zarr")


def test_projected_stack_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "utm"
    folder.mkdir()
    from rasterio.transform import from_origin

    for i in range(2):
        _write(folder / f"l{i}.tif", np.ones((10, 10), np.int16), from_origin(500000, 4e6, 1000, 1000), crs="EPSG:32633")
    with pytest.raises(SourceError, match=r"l0\.tif: CRS .* not geographic.*gdalwarp -t_srs EPSG:4326"):
        _build(_raster_data(folder), tmp_path / "store.zarr")


def test_all_nodata_layer_is_refused(tmp_path: Path) -> None:
    folder = _stack(tmp_path / "stack", d=3)
    transform, _ = _grid()
    _write(folder / "layer2.tif", np.full((60, 120), -9999, np.int16), transform)
    out = tmp_path / "store.zarr"
    with pytest.raises(SourceError, match=r"layer2\.tif: every cell is nodata.*drop the layer"):
        _build(_raster_data(folder), out)
    assert not out.exists()


def test_missing_raster_path_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"config key data\.raster\.path: .*nowhere does not exist"):
        source_paths(_raster_data(tmp_path / "nowhere"), REPO)
    folder = _stack(tmp_path / "stack", d=2)
    with pytest.raises(SourceError, match=r"config key data\.raster\.files: .*gone\.tif does not exist"):
        source_paths(_raster_data(folder, files=["layer1.tif", "gone.tif"]), REPO)


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_builds_the_store_contract(tmp_path: Path, suffix: str) -> None:
    path = _table(tmp_path / f"t{suffix}")
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    frame.loc[[3, 10], "b"] = np.nan  # two incomplete rows: dropped and counted
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    out = tmp_path / "store.zarr"
    description = _build(_table_data(path, weight="w", group="site"), out)
    assert description["n_dropped"] == 2 and description["n_rows"] == len(frame) - 2
    assert description["variables"] == ["a", "b", "c"]
    assert store_V(out) == pytest.approx(3.0, rel=1e-6)
    with xr.open_zarr(out, consolidated=True) as ds:
        assert "layers" not in ds and list(ds["variable"].values) == ["a", "b", "c"]
        test_rows = ds["test_row"].values
    kept = frame.dropna(subset=["a", "b", "c"]).reset_index(drop=True)
    np.testing.assert_allclose(load_weights(out, "test"), kept["w"].to_numpy()[test_rows], rtol=1e-6)  # the weight column
    groups = {name: set(kept["site"].to_numpy()[ds_rows]) for name, ds_rows in
              (("test", test_rows),)}
    train_sites = set(kept["site"].to_numpy()[xr.open_zarr(out, consolidated=True)["train_row"].values])
    assert not groups["test"] & train_sites  # a group never straddles the split


def test_table_training_sample_is_weighted(tmp_path: Path) -> None:
    """The training split's PCA is the weighted PCA of the table's training rows (the sample draws rows by weight),
    and measurably not the unweighted one."""
    path = _table(tmp_path / "t.parquet", n=20000)
    frame = pd.read_parquet(path)
    frame["w"] = np.where(frame["c"] > 0.5, 200.0, 1.0)  # the rows with large c weigh 200 times more
    frame.to_parquet(path)
    out = tmp_path / "store.zarr"
    data = _table_data(path, weight="w")
    build_source_store(data, REPO, out, dict(SETTINGS, n_train=200000), 256, source_checksums(data, REPO))
    with xr.open_zarr(out, consolidated=True) as ds:
        held_out = np.concatenate([ds["validation_row"].values, ds["test_row"].values])
    train = np.setdiff1d(np.arange(len(frame)), held_out)
    x, w = frame[["a", "b", "c"]].to_numpy()[train], frame["w"].to_numpy()[train]

    def spectrum(weights: np.ndarray) -> np.ndarray:
        mean = weights @ x / weights.sum()
        z = (x - mean) / np.sqrt(weights @ (x - mean) ** 2 / weights.sum())
        cov = (z * weights[:, None]).T @ z / weights.sum()
        return np.sort(np.linalg.eigvalsh(cov))[::-1] / np.trace(cov)

    stored = pca(load_split(out, "train")).lambda_over_V
    weighted, unweighted = spectrum(w), spectrum(np.ones_like(w))
    assert np.abs(stored - weighted).max() < 0.005
    assert np.abs(stored - unweighted).max() > 0.02  # the weights matter here: ignoring them would fail


def test_table_blocks_are_random_without_a_group(tmp_path: Path) -> None:
    """Without a group column, rows are cut into random blocks (seeded): a table sorted by a variable does not
    give held-out slices of its gradient."""
    path = _table(tmp_path / "t.csv", n=6000)
    frame = pd.read_csv(path).sort_values("a").reset_index(drop=True)
    frame.to_csv(path, index=False)
    out = tmp_path / "store.zarr"
    _build(_table_data(path, block_rows=50), out)
    with xr.open_zarr(out, consolidated=True) as ds:
        test_rows = ds["test_row"].values
    assert frame["a"].to_numpy()[test_rows].std() > 0.8 * frame["a"].std()  # spread over the whole range of a
    again = tmp_path / "again.zarr"
    _build(_table_data(path, block_rows=50), again)
    with xr.open_zarr(again, consolidated=True) as ds:
        np.testing.assert_array_equal(ds["test_row"].values, test_rows)  # the same seed, the same blocks


def test_weight_column_among_the_inputs_is_refused(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.csv")
    with pytest.raises(SourceError, match=r"column 'w' is both an input.*and the weight column"):
        _build(_table_data(path, columns=["a", "b", "w"], weight="w"), tmp_path / "store.zarr")


def test_a_split_without_positive_weight_is_refused(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.csv", n=3000)
    frame = pd.read_csv(path)
    frame["w"] = np.where(frame["site"] < 4, 1.0, 0.0)  # only 4 sites (200 rows) carry weight
    frame.to_csv(path, index=False)
    out = tmp_path / "store.zarr"
    with pytest.raises(SourceError, match=r"rows with a positive weight in the training split, fewer than one batch"):
        _build(_table_data(path, weight="w", group="site"), out)
    assert not out.exists()


@pytest.mark.parametrize(("column", "problem"), [
    ("name", r"column 'name' is not numeric.*drop it from data\.table\.columns"),
    ("flat", r"column 'flat' is constant.*drop it from data\.table\.columns"),
])
def test_bad_columns_are_named(tmp_path: Path, column: str, problem: str) -> None:
    n = 3000
    path = _table(tmp_path / "t.csv", n=n, name=["x"] * n, flat=np.ones(n))
    out = tmp_path / "store.zarr"
    with pytest.raises(SourceError, match=problem):
        _build(_table_data(path, columns=["a", "b", column]), out)
    assert not out.exists()


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.csv")
    with pytest.raises(SourceError, match=r"t\.csv: no column 'd'"):
        _build(_table_data(path, columns=["a", "b", "d"]), tmp_path / "store.zarr")


def test_negative_weights_are_refused(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.csv")
    frame = pd.read_csv(path)
    frame.loc[5, "w"] = -1.0
    frame.to_csv(path, index=False)
    out = tmp_path / "store.zarr"
    with pytest.raises(SourceError, match=r"weight column 'w' has 1 negative values.*data\.table\.weight"):
        _build(_table_data(path, weight="w"), out)
    assert not out.exists()


def test_fewer_rows_than_a_batch_are_refused(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.csv", n=600)
    out = tmp_path / "store.zarr"
    with pytest.raises(SourceError, match=r"t\.csv: \d+ rows with a positive weight in the training split, fewer than one batch \(1024 rows.*batch_size"):
        _build(_table_data(path, block_rows=20), out, min_rows=1024)
    assert not out.exists()


def test_missing_table_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"config key data\.table\.path: .*absent\.csv does not exist"):
        source_paths(_table_data(tmp_path / "absent.csv"), REPO)


def test_a_source_without_its_block_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"raster"):
        load_config({"data": {"source": "raster"}})


def test_example_presets_validate() -> None:
    for name in ("wc14-bioclim", "wc14-tmax", "table"):
        config = load_config(REPO / "presets" / "examples" / f"{name}.yaml")
        assert config["data"]["source"] in ("raster", "table")


def test_linear_latents_default_to_one_per_input(tmp_path: Path) -> None:
    """models.linear.latents null: the workflow fills in the source's variable count (WorldClim: 19, as before)."""
    from spectral_collapse.sources import n_variables

    assert n_variables({"source": "worldclim"}, REPO) == 19
    assert n_variables(_table_data(tmp_path / "t.csv"), REPO) == 3  # from the config alone
    folder = _stack(tmp_path / "stack", d=4)
    assert n_variables(_raster_data(folder), REPO) == 4
    description = tmp_path / "store.json"
    description.write_text('{"variables": ["a", "b"]}')
    assert n_variables(_raster_data(tmp_path / "moved"), REPO, description) == 2  # a redraw without the rasters
