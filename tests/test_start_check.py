"""Issue 19's validation of a start method (analysis.start_check), on exact linear-oracle tables (no training):
the oracle check passes the oracle and catches a point whose latent stayed collapsed; two scans that agree pass,
a scan whose thresholds moved by 10% (hysteresis) is reported rank by rank, and a point with another number of
active latents is listed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spectral_collapse.analysis import start_check
from spectral_collapse.analysis.model_analysis import analyse_model
from spectral_collapse.analysis.synthetic import linear_scan_tables, pca_table
from spectral_collapse.config import load_config
from spectral_collapse.scan import t_grid

LAM = np.array([9.8, 4.2, 1.9, 1.2, 0.65, 0.53, 0.31, 0.17, 0.11, 0.067, 0.018, 0.015, 0.0053, 0.003])
T_K = np.sort(LAM / 19.0)[::-1]
GRID = t_grid({"max": 1.0, "min": 1e-5, "per_decade": 5})
CFG = load_config()["analysis"]


def _scan(T_k=T_K):
    lat, prn, runs = linear_scan_tables(T_k, GRID, splits=("test", "train"))
    return {"latents": lat, "pruning": prn,
            "runs": pd.DataFrame([{k: v for k, v in r.items() if k != "totals"} for r in runs])}


def test_oracle_check_passes_the_oracle_and_catches_a_stuck_latent():
    scan = _scan()
    table = start_check.oracle_table(scan["latents"], scan["runs"], pca_table(T_K), CFG["max_m2_drift"])
    assert len(table) == len(GRID) and table["within"].all() and table["max_abs_dM2"].max() < 1e-9
    # A point where rank 3's latent stayed collapsed (the chain's risk: it came from the hot side).
    lat = scan["latents"].copy()
    T = GRID[10]
    stuck = (lat["T"] == T) & (lat["rank"] == 3)
    assert 1.0 - T / T_K[2] > 0.5
    lat.loc[stuck, ["M2", "mu2"]] = 0.0
    bad = start_check.oracle_table(lat, scan["runs"], pca_table(T_K), CFG["max_m2_drift"])
    row = bad[np.isclose(bad["T"], T)].iloc[0]
    assert not row["within"] and row["max_abs_dM2"] > 0.3
    assert bad["within"].sum() == len(GRID) - 1
    with pytest.raises(ValueError, match="train"):
        start_check.oracle_table(lat[lat["split"] == "test"], scan["runs"], pca_table(T_K), CFG["max_m2_drift"])


def test_threshold_table_flags_resolved_ranks_off_by_more_than_2_percent():
    scan = _scan()
    analysis = analyse_model(scan["latents"], scan["pruning"], scan["runs"], pca_table(T_K), CFG, "linear")[2]
    table = start_check.threshold_table(analysis, pca_table(T_K))
    fitted = table[table["status"] == "fitted"]
    assert len(fitted) >= 10 and fitted["within"].all()
    moved = start_check.threshold_table({**analysis, "T_c": [t * 1.03 if t else t for t in analysis["T_c"]]},
                                        pca_table(T_K))
    assert not moved[moved["status"] == "fitted"]["within"].any()


def test_two_starts_agree_or_the_difference_is_reported():
    same_points, same = start_check.start_agreement(_scan(), _scan(), pca_table(T_K), CFG, "linear")
    assert same_points["agree"].all() and len(same_points) == len(GRID)
    assert len(same) >= 10 and same["within"].all() and np.allclose(same["relative_difference"], 0.0)
    # hysteresis: the other start's thresholds lie 10% higher
    points, moved = start_check.start_agreement(_scan(), _scan(T_K * 1.1), pca_table(T_K), CFG, "linear")
    assert len(moved) >= 10 and not moved["within"].any()
    np.testing.assert_allclose(moved["relative_difference"], 0.1, atol=0.01)
    assert not points["agree"].all()  # some grid point lies between T_k and 1.1 T_k: one more active latent
    differing = points[~points["agree"]]
    assert (differing["n_active_b"] == differing["n_active_a"] + 1).all()
