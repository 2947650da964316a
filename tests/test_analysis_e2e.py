"""Synthetic end-to-end: a linear-oracle scan (3 seeds, some runs unconverged) written as per-run tables,
then collect -> spectra/summary -> every figure, checked against the known thresholds (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from spectral_collapse.analysis.collect import collect_scan
from spectral_collapse.provenance import write_parquet
from spectral_collapse.analysis.model_analysis import POOLED, analyse_model
from spectral_collapse.analysis.study_summary import study_summary
from spectral_collapse.analysis.synthetic import linear_scan_tables, pca_table, write_run_dirs
from spectral_collapse.config import load_config
from spectral_collapse.plotting.render import FIGURES, render
from spectral_collapse.scan import t_grid

# A WorldClim-like spectrum (lambda_k, sum = 19): thresholds from 0.5 down to below the scan.
LAM = np.array([9.8, 4.2, 1.9, 1.2, 0.65, 0.53, 0.31, 0.17, 0.11, 0.067, 0.018, 0.015, 0.0053, 0.003])
LAM = np.r_[LAM, 19.0 - LAM.sum() - 1e-4, 1e-4]
T_K = np.sort(LAM / 19.0)[::-1]
T_GRID = t_grid({"max": 1.0, "min": 1e-3, "per_decade": 8})
CFG = load_config()["analysis"]
# runs stopped short of equilibrium near a threshold: M^2 and rate scaled down
UNCONVERGED = {(0, T_GRID[4]): 0.4, (1, T_GRID[9]): 0.4, (2, T_GRID[14]): 0.4}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    lat, prn, runs = linear_scan_tables(T_K, T_GRID, seeds=(0, 1, 2), noise=0.01, unconverged=UNCONVERGED)
    paths = write_run_dirs(root / "runs", lat, prn, runs)
    latents, pruning, run_table = collect_scan(paths["latents"], paths["pruning"], paths["runs"])
    pca = pca_table(T_K)
    spectra, d_eff, summary = analyse_model(latents, pruning, run_table, pca, CFG, "linear")
    out = root / "analysis"
    tables = {"latents": latents, "pruning": pruning, "runs": run_table, "spectra": spectra, "d_eff": d_eff,
              "pca": pca}
    inputs = {}
    for name, df in tables.items():
        inputs[name] = out / f"{name}.parquet"
        write_parquet(df, inputs[name])
    inputs["analysis"] = out / "analysis.json"
    inputs["analysis"].write_text(json.dumps(summary, allow_nan=False))
    return {"root": root, "inputs": inputs, "summary": summary, "spectra": spectra, "runs": run_table,
            "d_eff": d_eff, "latents": latents}


def resolved(summary):
    """Ranks whose threshold lies well inside the scan (>= 10 x the coldest T)."""
    return np.flatnonzero(T_K >= 10 * min(T_GRID))


def test_collect_counts(scan):
    runs = scan["runs"]
    assert len(runs) == 3 * len(T_GRID)
    assert int((~runs["converged"]).sum()) == len(UNCONVERGED)
    assert set(runs.columns) >= {"run_id", "T", "seed", "status", "converged", "test_D_tilde_sampled"}
    s = scan["summary"]["runs"]
    assert (s["total"], s["converged"], s["unconverged"]) == (len(runs), len(runs) - 3, 3)
    assert not s["fits_use_unconverged"]


def test_thresholds_within_5_percent(scan):
    s = scan["summary"]
    ranks = resolved(s)
    T_c = np.array(s["T_c"], dtype=float)[ranks]
    np.testing.assert_allclose(T_c, T_K[ranks], rtol=0.05)
    T_c_m2 = np.array(s["T_c_m2"], dtype=float)[ranks]
    np.testing.assert_allclose(T_c_m2, T_K[ranks], rtol=0.05)
    np.testing.assert_allclose(np.array(s["dD"], dtype=float)[ranks], T_K[ranks], rtol=0.05)
    assert s["pca_relative_error_top5_max"] <= 0.05
    # every seed on its own too
    per_seed = scan["spectra"][scan["spectra"]["seed"] != POOLED]
    for _, g in per_seed.groupby("seed"):
        np.testing.assert_allclose(g["T_c"].to_numpy(float)[ranks], T_K[ranks], rtol=0.05)


def test_headline_numbers(scan):
    s = scan["summary"]
    assert s["identity_r2"] > 0.99
    assert s["rank_agreement"] >= len(resolved(s))
    assert s["rank_agreement"] <= s["rank_agreement_ranks"] == s["identity_r2_ranks"]
    assert s["kendall_tau"] > 0.95 and s["rank_inversions"] <= 1 and s["kendall_tau_ranks"] == s["identity_r2_ranks"]
    mf = s["meanfield"]
    assert 0.9 <= mf["exponent"] <= 1.1 and mf["stderr"] > 0 and mf["window"] == CFG["meanfield_window"]
    assert sorted(int(k) for k in mf["intercepts"]) == list(range(1, mf["n_groups"] + 1))
    assert s["d_eff"]["eps"] == CFG["d_eff_eps"]
    assert s["d_eff"]["pca"][:3] == s["d_eff"]["model"][:3]  # the linear oracle matches PCA where resolved
    spread = s["seed_spread"]
    assert spread["identity_r2"]["n"] == 3 and spread["meanfield_exponent"]["std"] >= 0
    assert len(spread["T_c"]["std"]) == len(T_K)
    assert set(scan["d_eff"]["source"]) == {"linear", "pca", "pca_test"}


def test_threshold_status(scan):
    """Thresholds are reported only for ranks active somewhere in the scan, with T_c inside it."""
    s = scan["summary"]
    status = np.array(s["threshold_status"])
    T_c = np.array(s["T_c"], dtype=float)
    assert set(status[resolved(s)]) == {"fitted"}
    assert set(status[T_K < min(T_GRID)]) == {"never_active"}       # collapsed at every scan point
    assert np.isfinite(T_c[status == "fitted"]).all() and np.isnan(T_c[status != "fitted"]).all()
    assert s["threshold_fit"]["scan_T_range"] == [min(T_GRID), max(T_GRID)]
    assert s["threshold_fit"]["window_T_over_dD"] == CFG["rate_window"]
    assert s["identity_r2_ranks"] == int((status == "fitted").sum())
    assert list(scan["spectra"].loc[scan["spectra"]["seed"] == POOLED, "threshold_status"]) == list(status)


def test_powerlaw_compares_like_with_like(scan):
    """PCA is fitted over the model's window (up to its last rank with a threshold), and also over the
    configured window, named as such."""
    fits = scan["summary"]["powerlaw"]
    last = max(k for k, st in zip(scan["summary"]["rank"], scan["summary"]["threshold_status"]) if st == "fitted")
    assert fits["model"]["ranks"] == [CFG["powerlaw_ranks"][0], last] == fits["pca"]["ranks"]
    assert fits["pca_configured_window"]["ranks"][0] == CFG["powerlaw_ranks"][0]
    assert fits["pca_configured_window"]["ranks"][1] > last
    lam = np.r_[T_K]
    K = np.arange(CFG["powerlaw_ranks"][0], last + 1)
    tail = np.array([lam[k:].sum() for k in K])
    slope = np.polyfit(np.log(K), np.log(tail), 1)[0]
    assert fits["pca"]["exponent"] == pytest.approx(-slope)


def test_unconverged_runs_are_excluded(scan):
    """Counting the stopped-short runs as converged must bias the thresholds: proof that they were excluded."""
    lat = pd.read_parquet(scan["inputs"]["latents"]).assign(converged=True)
    prn = pd.read_parquet(scan["inputs"]["pruning"])
    runs = scan["runs"].assign(converged=True)
    _, _, biased = analyse_model(lat, prn, runs, pca_table(T_K), CFG, "linear")
    err = lambda s: np.nanmax(np.abs(np.array(s["T_c"], float)[:10] / T_K[:10] - 1))  # noqa: E731
    assert err(biased) > err(scan["summary"])


def test_summary_is_strict_json_and_combines(scan):
    text = scan["inputs"]["analysis"].read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    combined = study_summary({"linear": scan["summary"]}, pca_table(T_K),
                                 {"files": {"wc2.1_10m_bio_1.tif": "ab"}, "source": "local"},
                                 {"n_land": 808053, "V": 19.0}, CFG)
    assert set(combined) >= {"models", "pca", "data", "config_hash", "package_versions", "heldout_weighting"}
    assert combined["data"]["files_sha256"] == {"wc2.1_10m_bio_1.tif": "ab"}
    assert combined["pca"]["a_test"] == combined["pca"]["a_validation"] == [1.0] * len(T_K)
    assert "cell-area-weighted" in combined["heldout_weighting"]
    assert scan["summary"]["a_test"] == [1.0] * len(T_K)
    json.dumps(combined, allow_nan=False)


def test_every_figure_is_drawn(scan, tmp_path):
    inputs = dict(scan["inputs"])
    # a small synthetic maps input (the real one comes from latent_maps)
    lat = np.linspace(89.5, -89.5, 90)
    lon = np.linspace(-179, 179, 180)
    field = np.cos(np.deg2rad(lat))[:, None] * np.sin(np.deg2rad(lon))[None, :]
    mu = np.stack([field, field.T.mean() + field ** 2, -field, field * 0.5]).astype(np.float32)
    mu[:, :10] = np.nan
    maps = xr.Dataset({"mu": (("rank", "lat", "lon"), mu)},
                      coords={"rank": [1, 2, 3, 4], "latent": ("rank", [3, 0, 7, 1]),
                              "M2": ("rank", [0.99, 0.9, 0.8, 0.5]), "lat": lat, "lon": lon}, attrs={"T": 1e-3})
    inputs["maps"] = tmp_path / "latent_maps.nc"
    maps.to_netcdf(inputs["maps"], engine="scipy")
    corr = pd.DataFrame([{"rank": r, "latent": 0, "M2": 0.9, "variable": f"bio{v}", "long_name": f"variable {v}",
                          "units": "degC" if v < 12 else "mm", "r": np.sin(r * v)} for r in range(1, 5)
                         for v in range(1, 20)])
    inputs["correlations"] = tmp_path / "latent_correlations.parquet"
    corr.to_parquet(inputs["correlations"])
    for figure in FIGURES:
        png, pdf = tmp_path / f"{figure}.png", tmp_path / f"{figure}.pdf"
        render(figure, inputs, png, pdf, "linear")
        assert png.stat().st_size > 10_000 and pdf.stat().st_size > 5_000, figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"


def test_captions_exist_for_every_figure():
    from pathlib import Path

    report = Path(__file__).resolve().parents[1] / "workflow" / "report"
    rule = (report.parent / "rules" / "redraw.smk").read_text()
    for figure in FIGURES:
        assert f'caption="../report/{figure}.rst"' in rule, figure
        text = (report / f"{figure}.rst").read_text()
        # the shared opening is written out, not included: an include path is taken from the working directory,
        # which `snakemake -d` (a run on your own data, docs/own-data.md) moves
        assert "include::" not in text and "Temperature T = beta sigma_dec^2 / V" in text, figure
        assert "What to look at" in text, figure


def test_pca_check_uses_the_training_split_when_present(scan):
    lat = pd.read_parquet(scan["inputs"]["latents"])
    prn = pd.read_parquet(scan["inputs"]["pruning"])
    assert analyse_model(lat, prn, scan["runs"], pca_table(T_K), CFG, "linear")[2]["pca_check"]["split"] == "test"
    lat_tr = lat[lat["split"] == "test"].assign(split="train")
    prn_tr = prn[prn["split"] == "test"].assign(split="train")
    _, _, s = analyse_model(pd.concat([lat, lat_tr]), pd.concat([prn, prn_tr]), scan["runs"], pca_table(T_K), CFG,
                            "linear")
    check = s["pca_check"]
    assert check["split"] == "train" and check["relative_error_top5_max"] <= 0.05
    assert s["T_c"] == scan["summary"]["T_c"]  # headline numbers stay on the test split


def test_drifting_points_are_left_out_of_every_fit(scan):
    lat = pd.read_parquet(scan["inputs"]["latents"])
    prn = pd.read_parquet(scan["inputs"]["pruning"])
    # M^2 still moving and biased low next to each threshold: must not enter the exponent fit
    T_c = dict(zip(range(1, len(T_K) + 1), T_K))
    x = 1 - lat["T"] / lat["rank"].map(T_c)
    near = (x > 0) & (x < 0.3)  # biased low, but above the active threshold: only the drift rule can remove them
    lat.loc[near, "M2"] *= 0.7
    lat.loc[near, "m2_drift"] = 0.2
    s = analyse_model(lat, prn, scan["runs"], pca_table(T_K), CFG, "linear")[2]
    drifting = set(lat.loc[near & (lat["split"] == "test") & lat["converged"], "run_id"])
    # a run still drifting is not at equilibrium: left out of every fit and listed (issue 13)
    assert s["runs"]["drifting"] == len(s["runs"]["drifting_points"]) == len(drifting) > 0
    assert s["runs"]["equilibrium"] == s["runs"]["converged"] - len(drifting)
    assert all(p["max_m2_drift"] == pytest.approx(0.2) for p in s["runs"]["drifting_points"])
    assert 0.9 <= s["meanfield"]["exponent"] <= 1.1
    mf_all = analyse_model(lat, prn, scan["runs"], pca_table(T_K), {**CFG, "max_m2_drift": 1.0}, "linear")[2]["meanfield"]
    assert mf_all["exponent"] > 1.1


def test_figures_are_drawn_when_no_rank_has_a_threshold(scan, tmp_path):
    """A short scan where no point reached equilibrium near a threshold (e.g. the laptop's mlp-d4): every rank's
    T_c is null; the figures must still be drawn (empty panels say so), not fail on an empty log axis."""
    inputs = dict(scan["inputs"])
    spectra = pd.read_parquet(inputs["spectra"]).assign(T_c=np.nan, n_fit=0)
    inputs["spectra"] = tmp_path / "spectra.parquet"
    spectra.to_parquet(inputs["spectra"])
    summary = json.loads(Path(inputs["analysis"]).read_text())
    summary.update(identity_r2=None, identity_r2_ranks=0, rank_agreement=0, rank_agreement_ranks=0,
                   kendall_tau=None, rank_inversions=0, T_c=[None] * len(summary["T_c"]))
    summary["meanfield"].update(exponent=None, stderr=None, n_points=0, intercepts={})
    inputs["analysis"] = tmp_path / "analysis.json"
    inputs["analysis"].write_text(json.dumps(summary))
    for figure in ("cascade", "spectra", "meanfield", "truncation"):
        png = tmp_path / f"{figure}.png"
        render(figure, inputs, png, None, "mlp-d4")
        assert png.stat().st_size > 10_000, figure
