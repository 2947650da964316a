"""Which thresholds a model's analysis reports (threshold_status), on small linear-oracle scans."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spectral_collapse.analysis.collect import run_rows
from spectral_collapse.analysis.model_analysis import analyse_model
from spectral_collapse.analysis.synthetic import linear_scan_tables, pca_table
from spectral_collapse.config import load_config

CFG = load_config()["analysis"]
T_GRID = np.logspace(0, -5, 41)
# mode 1 collapses above the warmest scan point, modes 2-3 inside the scan, mode 4 below the coldest
T_K = np.array([3.0, 0.1, 0.01, 1e-7])


def summarise(lat: pd.DataFrame, prn: pd.DataFrame, runs: list[dict]) -> dict:
    table = pd.DataFrame([row for run in runs for row in run_rows({"runs": [run]})])
    return analyse_model(lat, prn, table, pca_table(T_K), CFG, "linear")[2]


@pytest.fixture(scope="module")
def tables():
    return linear_scan_tables(T_K, T_GRID)


def test_threshold_above_the_scan_is_not_reported(tables):
    s = summarise(*tables)
    assert s["threshold_status"] == ["outside_scan", "fitted", "fitted", "never_active"]
    assert s["T_c"][0] is None and s["T_c_m2"][0] is None
    assert s["T_c"][1:3] == pytest.approx([0.1, 0.01], rel=1e-6)
    assert s["identity_r2_ranks"] == s["kendall_tau_ranks"] == 2
    assert s["rank_agreement"] == s["rank_agreement_ranks"] == 0  # rank 1 has no threshold: nothing leads


def test_noise_rate_of_a_never_active_rank_is_not_a_threshold(tables):
    """A flat 2e-3-nat rate and a utility of 5e-3 on a rank that never carries signal: the rate fit returns a
    number decades below its window, which must not be reported."""
    lat, prn, runs = (t.copy() if isinstance(t, pd.DataFrame) else t for t in tables)
    lat.loc[lat["rank"] == 4, "rate"] = 2e-3
    prn.loc[prn["K"] <= 3, "D_tilde"] += 5e-3  # best D~_3 - best D~_4 = 5e-3, other utilities unchanged
    s = summarise(lat, prn, runs)
    assert s["dD"][3] == pytest.approx(5e-3, rel=1e-3)
    assert s["threshold_status"][3] == "never_active" and s["T_c"][3] is None
    assert s["threshold_fit"]["n_points"][3] > 0  # there were points in the window: the fit ran, and was refused
    assert s["threshold_status"][1:3] == ["fitted", "fitted"]


def test_irregular_T_per_run():
    """With a learned decoder variance every run has its own T (T_eff): no grid is assumed, not even one
    shared by the seeds."""
    parts = [linear_scan_tables(T_K, T_GRID * np.exp(0.05 * np.sin(np.arange(T_GRID.size) + seed)), seeds=(seed,))
             for seed in (0, 1)]
    lat = pd.concat([p[0] for p in parts], ignore_index=True)
    prn = pd.concat([p[1] for p in parts], ignore_index=True)
    runs = [r for p in parts for r in p[2]]
    assert lat.groupby("run_id")["T"].first().nunique() == 2 * T_GRID.size
    s = summarise(lat, prn, runs)
    assert s["threshold_fit"]["scan_T_range"] == [lat["T"].min(), lat["T"].max()]
    assert s["threshold_status"] == ["outside_scan", "fitted", "fitted", "never_active"]
    assert s["T_c"][1:3] == pytest.approx([0.1, 0.01], rel=1e-6)
