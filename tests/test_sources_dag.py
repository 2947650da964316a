"""Issue 20, through the whole DAG: a tiny raster stack and a tiny table, each run by `snakemake` in its own folder
(-d) with the linear family, give thresholds equal to the weighted PCA of their training split within 2% at every
rank the scan resolves, and the spectroscopy (variables carried per latent, d_eff, PCA 95%, VIF step) under their
own variable names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from test_sources import _grid, _write

REPO = Path(__file__).resolve().parents[1]
# Five variables with covariance Q diag(3, 1.2, 0.5, 0.2, 0.1) Q^T (Q a fixed random rotation): after the store's
# standardization, thresholds lambda_k / V of about 0.59, 0.24, 0.105, 0.047, 0.021, a factor 2.2-2.5 apart and all
# inside the linear family's grid (1 to 1e-3), so that no two ranks share a fit window.
EIGEN = np.array([3.0, 1.2, 0.5, 0.2, 0.1])


def _factors(n: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(10).normal(size=(5, 5)))
    return np.random.default_rng(seed).normal(size=(n, 5)) @ (q * np.sqrt(EIGEN)).T


def _raster_source(folder: Path) -> dict:
    folder.mkdir()
    transform, (ny, nx) = _grid(ny=90, nx=180, res=1.0, west=-90.0, north=45.0)
    x = _factors(ny * nx, 0).reshape(ny, nx, 5)
    for i in range(5):
        v = (x[..., i] * 100).astype(np.int16)
        v[:8] = -9999  # a strip of nodata
        _write(folder / f"v{i + 1}.tif", v, transform)
    return {"source": "raster", "raster": {"path": str(folder), "scale": 0.01, "units": "1"}}


def _table_source(path: Path) -> dict:
    x = _factors(16000, 1)
    frame = pd.DataFrame(x, columns=[f"col_{c}" for c in "abcde"])
    frame["area"] = np.random.default_rng(2).uniform(0.5, 1.5, size=len(frame))
    frame.loc[::997, "col_c"] = np.nan  # incomplete rows: dropped and counted
    frame.to_csv(path, index=False)
    return {"source": "table", "table": {"path": str(path), "columns": list(frame.columns[:5]), "weight": "area",
                                         "block_rows": 40}}


def _preset(data: dict) -> dict:
    """The laptop preset's linear family (its grid, 1 to 1e-3 at 10 per decade, and its annealed training) on a
    small training sample; only the stability probe shortened."""
    return {
        "data": data,
        "store": {"n_train": 20000, "block_km": 500},
        "scan": {"families": ["linear"]},
        "analysis": {"stability_check": {"updates": 100}},
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["raster", "table"])
def test_tiny_source_through_the_dag(kind: str, tmp_path: Path) -> None:
    data = _raster_source(tmp_path / "stack") if kind == "raster" else _table_source(tmp_path / "sites.csv")
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(_preset(data)))
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "WORLDCLIM_DIR"}  # a user's source needs no WorldClim
    env["PYTHONPATH"] = str(REPO / "src")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
                           "--configfile", str(REPO / "config.yaml"), str(preset), "--cores", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((work / "results/summary.json").read_text())
    linear = summary["models"]["linear"]
    resolved = [k for k, s in zip(linear["rank"], linear["threshold_status"]) if s == "fitted"
                and k not in linear["thresholds_resolved"]["unresolved_ranks"]]
    assert len(resolved) >= 3, linear["threshold_status"]
    lam = dict(zip(linear["rank"], linear["lambda_over_V"]))
    Tc = dict(zip(linear["rank"], linear["T_c"]))
    off = {k: Tc[k] / lam[k] - 1 for k in resolved}
    assert all(abs(v) < 0.02 for v in off.values()), off
    # the PCA it is compared with is the weighted PCA of the source's training split (store: weighted draws)
    store = json.loads(next((work / "results/data").glob(f"{kind}-*/store.json")).read_text())
    assert store["variables"] == ([f"v{i}" for i in range(1, 6)] if kind == "raster" else [f"col_{c}" for c in "abcde"])
    if kind == "table":
        assert store["n_dropped"] == len(range(0, 16000, 997))
        assert summary["data"]["store"]["n_dropped"] == store["n_dropped"]  # reported in the study summary too
    spectro = json.loads((work / "results/spectroscopy/spectroscopy.json").read_text())
    text = json.dumps(spectro)
    assert all(name in text for name in store["variables"])
    assert "bio1" not in text
    assert (work / "results/figures/linear/maps.png").is_file()
