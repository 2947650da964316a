"""Latent spectroscopy (issue 20): the VIF step against a direct 1/(1 - R^2), the PCA share, the correlations of a
tiny trained-model file with a tiny store, and the table's choice of leading latents, on synthetic data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from spectral_collapse.analysis.maps import weighted_corr
from spectral_collapse.analysis.spectroscopy import (carried_variables, components_for_share, describe_latents,
                                                     figure_latents, latent_variables, members_of,
                                                     model_spectroscopy, spectroscopy_json, spectroscopy_table,
                                                     vif_step, vif_values)
from spectral_collapse.vae import VAE, VAEConfig, save_trained

REPO = Path(__file__).resolve().parents[1]


def direct_vif(x: np.ndarray) -> np.ndarray:
    """1 / (1 - R^2) of each column regressed on the others with an intercept (numpy least squares)."""
    out = []
    for j in range(x.shape[1]):
        y = x[:, j]
        A = np.column_stack([np.ones(len(x)), np.delete(x, j, axis=1)])
        resid = y - A @ np.linalg.lstsq(A, y, rcond=None)[0]
        r2 = 1.0 - resid @ resid / np.sum((y - y.mean()) ** 2)
        out.append(1.0 / (1.0 - r2))
    return np.array(out)


@pytest.fixture
def collinear() -> tuple[np.ndarray, list[str]]:
    """x3 = x1 + x2 + small noise (collinear); x4 independent; offsets and scales so the intercept matters."""
    rng = np.random.default_rng(0)
    n = 3000
    x1, x2, x4 = rng.normal(size=(3, n))
    x3 = x1 + x2 + 0.05 * rng.normal(size=n)
    x = np.column_stack([x1 + 5.0, 3.0 * x2, x3 - 2.0, x4])
    return x, ["temp", "prec", "range", "soil"]


def test_vif_values_are_one_over_one_minus_r2(collinear) -> None:
    x, _ = collinear
    np.testing.assert_allclose(vif_values(x), direct_vif(x), rtol=1e-6)
    np.testing.assert_allclose(vif_values(x[:, [0, 1, 3]]), direct_vif(x[:, [0, 1, 3]]), rtol=1e-6)


def test_vif_step_drops_the_collinear_variable_and_keeps_the_independent_ones(collinear) -> None:
    x, names = collinear
    full = direct_vif(x)
    assert full[2] > 100  # the set-up: range is nearly temp + prec
    step = vif_step(x, names, 10.0)
    worst = int(np.argmax(full))
    assert step["dropped"][0]["variable"] == names[worst]
    assert step["dropped"][0]["vif"] == pytest.approx(full[worst], rel=1e-6)
    assert len(step["dropped"]) == 1 and "soil" in step["kept"]
    assert step["kept"] == [n for n in names if n != names[worst]]  # input order
    kept = [names.index(n) for n in step["kept"]]
    for name, value in zip(step["kept"], direct_vif(x[:, kept])):
        assert step["vif"][name] == pytest.approx(value, rel=1e-6) and value < 10.0
    assert step["threshold"] == 10.0 and step["library"].startswith("statsmodels 0.15")
    assert step["n_rows"] == len(x)


def test_vif_step_keeps_independent_variables_and_drops_an_exact_copy() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 3))
    assert vif_step(x, ["a", "b", "c"], 10.0)["dropped"] == []
    dup = np.column_stack([x, x[:, 0] * 2.0 + 1.0])  # an exact linear copy of a
    step = vif_step(dup, ["a", "b", "c", "a2"], 10.0)
    assert [d["variable"] for d in step["dropped"]] in (["a"], ["a2"])
    assert math.isfinite(step["dropped"][0]["vif"]) and step["dropped"][0]["vif"] > 1e6
    assert {"b", "c"} <= set(step["kept"]) and len(step["kept"]) == 3
    with pytest.raises(ValueError):
        vif_step(x, ["a", "b"], 10.0)


def test_components_for_share() -> None:
    lam = [0.6, 0.3, 0.08, 0.02]
    assert components_for_share(lam, 0.95) == 3
    assert components_for_share(lam, 0.9) == 2  # 0.6 + 0.3 is 0.8999999999999999 in floating point: still 2
    assert components_for_share(lam, 0.5) == 1
    assert components_for_share(lam, 0.99) == 4
    assert components_for_share([2.0, 19.0 * 0.3, 19.0 * 0.08 - 0.1], 0.95) == components_for_share(
        sorted([2.0, 19.0 * 0.3, 19.0 * 0.08 - 0.1]), 0.95)  # unsorted and not normalized: the same


def test_carried_variables_is_the_weighted_pearson_r() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 3))
    mu = np.column_stack([2.0 * x[:, 0] + 1.0, -x[:, 2] + 0.1 * rng.normal(size=500)])
    r = carried_variables(mu, x, np.ones(500), [0, 1])
    np.testing.assert_allclose(r[0], np.corrcoef(np.column_stack([mu[:, 0], x]).T)[0, 1:], atol=1e-12)
    assert r[0, 0] == pytest.approx(1.0) and r[1, 2] < -0.99
    w = rng.uniform(0.1, 2.0, size=500)
    np.testing.assert_allclose(carried_variables(mu, x, w, [1])[0], weighted_corr(mu[:, 1], x, w))


def test_members_of_matches_T_and_seed_as_the_tables_store_them() -> None:
    points = {(0.5, 0): "m/T5.0000e-01/seed0", (0.1, 0): "m/T1.0000e-01/seed0"}
    assert members_of({"T": [0.5, 0.2, 0.1], "seed": 0}, points) == ["m/T5.0000e-01/seed0", None,
                                                                      "m/T1.0000e-01/seed0"]
    with pytest.raises(ValueError, match="matches scan point"):
        members_of({"T": [0.5], "seed": 0, "run_id": ["m/T1.0000e-01/seed0"]}, points)


# --------------------------------------------------------------------------- a tiny model and store

NAMES = ["alpha", "beta", "gamma"]


def tiny_store(path: Path, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A Zarr store with what latent_variables reads: train_x, test_x, test_weight and the variable names (a
    table-like source: no grid, no long names)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, size=n)
    ds = xr.Dataset({"train_x": (("train_sample", "variable"), x),
                     "test_x": (("test_sample", "variable"), x[::-1].copy()),
                     "test_weight": (("test_sample",), w)},
                    coords={"variable": NAMES})
    ds.to_zarr(path, consolidated=True, zarr_format=2)
    return x[::-1].copy(), w


def tiny_model(path: Path, Ts: list[float]) -> None:
    """A linear VAE of three members with hand-set means: member 0: z0 = x_alpha, z1 = -x_gamma; member 1:
    z0 = x_beta + x_gamma; member 2: z0 = x_alpha - x_beta."""
    model = VAE(VAEConfig.build(family="linear", latents=2, n_features=3, ensemble=3))
    weight = torch.zeros(3, 3, 2)
    weight[0, 0, 0], weight[0, 2, 1] = 1.0, -1.0
    weight[1, 1, 0], weight[1, 2, 0] = 1.0, 1.0
    weight[2, 0, 0], weight[2, 1, 0] = 1.0, -1.0
    with torch.no_grad():
        model.enc_mu.weight.copy_(weight)
    save_trained(path, model, {"T": Ts, "seed": 0, "model": "lin"})


def scan_tables(Ts: list[float], converged: list[bool]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """scan_latents (test and train rows) and scan_runs for three runs of the tiny model."""
    rows = []
    active = {0: [True, True], 1: [True, False], 2: [True, True]}
    for e, T in enumerate(Ts):
        for split in ("train", "test"):
            for latent in (0, 1):
                rows.append({"run_id": f"lin/T{T}/seed0", "model": "lin", "T": T, "seed": 0, "split": split,
                             "latent": latent, "rank": latent + 1, "M2": 0.9 - 0.3 * latent,
                             "active": active[e][latent] and split == "test", "converged": converged[e],
                             "m2_drift": 0.0})
    latents = pd.DataFrame(rows)
    runs = pd.DataFrame({"run_id": [f"lin/T{T}/seed0" for T in Ts], "T": Ts, "seed": 0, "converged": converged,
                         "stable": pd.array([True, None, True], dtype="boolean")})
    return latents, runs


def test_latent_variables_of_a_tiny_model(tmp_path: Path) -> None:
    Ts = [0.5, 0.1, 0.02]
    x, w = tiny_store(tmp_path / "store.zarr")
    tiny_model(tmp_path / "model.pt", Ts)
    latents, runs = scan_tables(Ts, converged=[True, True, False])  # the coldest point is not at equilibrium
    table = latent_variables(tmp_path / "store.zarr", [tmp_path / "model.pt"], latents, runs, max_drift=0.05)
    assert set(table["run_id"]) == {"lin/T0.5/seed0", "lin/T0.1/seed0"}
    assert table["at_equilibrium"].all() and list(table["variable"][:3]) == NAMES
    assert len(table) == (2 + 1) * 3  # active latents only (test split's flag): 2 + 1, times 3 variables
    r = table.set_index(["run_id", "latent", "variable"])["r"].sort_index()
    assert r["lin/T0.5/seed0", 0, "alpha"] == pytest.approx(1.0, abs=1e-6)
    assert r["lin/T0.5/seed0", 1, "gamma"] == pytest.approx(-1.0, abs=1e-6)
    expected = weighted_corr(x[:, 1] + x[:, 2], x, w)  # member 1's z0, weighted by the test rows' weights
    np.testing.assert_allclose(r.loc["lin/T0.1/seed0", 0].reindex(NAMES).to_numpy(), expected, atol=1e-6)
    assert expected[0] != pytest.approx(weighted_corr(x[:, 1] + x[:, 2], x, np.ones(len(x)))[0], abs=1e-6)
    # a scan point at equilibrium without a model.pt member is an error, not a silent gap
    with pytest.raises(ValueError, match="no model.pt member"):
        latent_variables(tmp_path / "store.zarr", [tmp_path / "model.pt"], latents.assign(
            T=latents["T"].replace(0.5, 0.4)), runs, max_drift=0.05)


# --------------------------------------------------------------------------- the table on synthetic frames


def synthetic_model() -> dict:
    """Three runs: A (T=0.5) best at K=1, B (T=0.1) best at K=2 and 3, C (T=0.01) best everywhere but not
    converged (must never be picked). d_eff per eps as analysis.json gives it, NaN at the smallest eps."""
    D = {"m/A": [1.0, 0.3, 0.2, 0.2], "m/B": [1.0, 0.4, 0.05, 0.01], "m/C": [1.0, 0.01, 0.001, 0.0001]}
    T = {"m/A": 0.5, "m/B": 0.1, "m/C": 0.01}
    pruning = pd.DataFrame([{"run_id": rid, "T": T[rid], "seed": 0, "split": split, "K": K, "D_tilde": d}
                            for rid, ds in D.items() for split in ("test", "validation") for K, d in enumerate(ds)])
    pruning.loc[pruning["split"] == "validation", "D_tilde"] = 0.0  # another split: must be ignored
    latent_of = {"m/A": [4, 1, 2], "m/B": [3, 7, 0], "m/C": [5, 6, 1]}
    latents = pd.DataFrame([{"run_id": rid, "T": T[rid], "seed": 0, "split": "test", "latent": z, "rank": k + 1,
                             "M2": 0.9 - 0.2 * k, "active": k < (1 if rid == "m/A" else 3),
                             "converged": rid != "m/C", "m2_drift": 0.0}
                            for rid, zs in latent_of.items() for k, z in enumerate(zs)])
    runs = pd.DataFrame({"run_id": list(D), "T": list(T.values()), "seed": 0})
    r = {("m/A", 4): [0.95, -0.2, 0.1], ("m/B", 3): [0.5, -0.9, 0.1], ("m/B", 7): [0.1, 0.2, -0.8],
         ("m/B", 0): [0.3, 0.1, 0.05]}
    variables = pd.DataFrame([{"run_id": rid, "latent": z, "variable": v, "long_name": "", "units": "", "r": c}
                              for (rid, z), rs in r.items() for v, c in zip(["a", "b", "c"], rs)])
    d_eff = {"eps": [0.5, 0.1, 0.02, 0.001], "model": [1.0, 2.0, 3.0, None], "pca": [1.0, 2.0, 2.0, 3.0],
             "pca_heldout": [1.0, 2.0, 3.0, 3.0]}
    return {"d_eff": d_eff, "latents": latents, "pruning": pruning, "runs": runs, "variables": variables}


COLLINEARITY = {"vif_step": {"threshold": 10.0, "kept": ["a", "c"], "dropped": [{"variable": "b", "vif": 40.0}],
                             "vif": {"a": 1.2, "c": 1.2}},
                "pca_share": {"share": 0.95, "components": 2, "computed": "test"}}


def test_spectroscopy_table_picks_the_best_run_at_d_eff(tmp_path: Path) -> None:
    s = synthetic_model()
    entry = model_spectroscopy("m", s["d_eff"], s["latents"], s["pruning"], s["runs"], s["variables"], 0.05, 2)
    assert entry["at_equilibrium"] and entry["n_points"] == 2
    table = spectroscopy_table({"m": entry}, COLLINEARITY)
    assert list(table["vae_run_id"][:3]) == ["m/A", "m/B", "m/B"] and table["vae_run_id"].isna().iloc[3]
    assert list(table["vae_T"][:3]) == [0.5, 0.1, 0.1]
    assert table["vae_leading"].iloc[0] == "z4: a (+0.95), b (-0.20)"
    assert table["vae_leading"].iloc[1] == "z3: b (-0.90), a (+0.50); z7: c (-0.80), b (+0.20)"
    assert table["vae_leading"].iloc[2].endswith("; z0: a (+0.30), b (+0.10)")
    assert table["vae_leading"].iloc[3] == "" and pd.isna(table["vae_d_eff"].iloc[3])
    assert list(table["vae_d_eff"][:3]) == [1, 2, 3] and list(table["pca_d_eff"]) == [1, 2, 2, 3]
    assert set(table["vif_kept"]) == {2} and set(table["vif_variables"]) == {"a, c"}
    assert set(table["pca_components_for_share"]) == {2} and set(table["share"]) == {0.95}
    # the coldest fit point is B (C is not at equilibrium); the figure takes the smallest eps with a d_eff
    assert entry["coldest"]["run_id"] == "m/B" and len(entry["coldest"]["latents"]) == 3
    shown, what = figure_latents(entry)
    assert [rec["latent"] for rec in shown] == [3, 7, 0] and "eps = 0.02" in what
    record = spectroscopy_json({"m": entry}, table, COLLINEARITY, {"n_carried_variables": 2})
    text = json.dumps(record, allow_nan=False)
    assert record["table"][3]["vae_d_eff"] is None and record["vif_step"]["dropped"][0]["variable"] == "b"
    assert record["models"]["m"]["leading"][1]["latents"][0]["r"] == {"a": 0.5, "b": -0.9, "c": 0.1}
    assert "usdm" in text
    table.to_csv(tmp_path / "t.csv", index=False)
    assert pd.read_csv(tmp_path / "t.csv")["vae_d_eff"].iloc[0] == 1


def test_figure_falls_back_to_the_coldest_point_and_draws(tmp_path: Path) -> None:
    from spectral_collapse.plotting.spectroscopy import plot_latent_variables
    from spectral_collapse.plotting.style import save_figure

    s = synthetic_model()
    none = {**s["d_eff"], "model": [None] * 4}
    entry = model_spectroscopy("m", none, s["latents"], s["pruning"], s["runs"], s["variables"], 0.05, 3)
    assert all(e["latents"] == [] for e in entry["leading"])
    shown, what = figure_latents(entry)
    assert "coldest" in what and [rec["latent"] for rec in shown] == [3, 7, 0]
    assert describe_latents([{"latent": 9, "carries": []}]) == "z9: (collapsed)"
    png = tmp_path / "m.png"
    save_figure(plot_latent_variables(entry, shown, what), png)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spectroscopy_is_off_the_redraw_path() -> None:
    """The spectroscopy's tables are no cached input of a redraw (the reference bundle ships no models), so its
    scripts are left out of the redraw's staleness check, and nothing the redraw reads is made by them."""
    from spectral_collapse import paths, redraw

    cached = redraw.cached_inputs(["linear", "mlp-d4"])
    made_off_path = [paths.COLLINEARITY, paths.SPECTROSCOPY_JSON, paths.SPECTROSCOPY_TABLE,
                     paths.LATENT_VARIABLES.format(model="linear")]
    assert not set(made_off_path) & set(cached)
    assert set(redraw.OFF_PATH_SCRIPTS) <= {p.name for p in (REPO / "scripts").glob("*.py")}
