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


def _write_bundle(root, scan, commit):
    import json

    import yaml

    analysis_dir = root / "results/analysis/linear"
    analysis_dir.mkdir(parents=True)
    for name, table in scan.items():
        table.to_parquet(analysis_dir / f"scan_{name}.parquet")
    pca_table(T_K).to_parquet(root / "results/analysis/pca.parquet")
    result = analyse_model(scan["latents"], scan["pruning"], scan["runs"], pca_table(T_K), CFG, "linear")[2]
    (analysis_dir / "analysis.json").write_text(json.dumps(result))
    (root / "config.yaml").write_text(yaml.safe_dump({"analysis": dict(CFG)}))
    (root / "provenance.json").write_text(json.dumps({"config_hash": "c", "code_commit": commit}))


def test_validate_bundle_writes_the_tables_and_never_compares_a_run_with_itself(tmp_path):
    import json

    bundle = tmp_path / "reference"
    _write_bundle(bundle, _scan(), commit="new")
    old = bundle / "random_start"
    (old / "linear").mkdir(parents=True)
    for name, table in _scan(T_K * 1.1).items():
        table.to_parquet(old / "linear" / f"scan_{name}.parquet")
    pca_table(T_K).to_parquet(old / "pca.parquet")
    (old / "provenance.json").write_text(json.dumps({"config_hash": "c", "code_commit": "old"}))
    summary = start_check.validate_bundle(bundle)
    assert summary["linear_oracle"]["points_within"] == summary["linear_oracle"]["points_at_equilibrium"] == len(GRID)
    assert summary["linear_oracle"]["ranks_within"] == summary["linear_oracle"]["resolved_ranks"] >= 10
    moved = summary["random_start"]["linear"]
    assert moved["ranks_compared"] >= 10 and moved["ranks_within"] == 0 and moved["differing_points"]
    for name in ("linear_oracle_m2", "linear_oracle_thresholds", "start_points_linear", "start_thresholds_linear"):
        assert (bundle / "validation" / f"{name}.csv").is_file(), name
    assert json.loads((bundle / "validation/validation.json").read_text())["random_start"]["linear"]["ranks_within"] == 0
    # the random-start tables of the same run: nothing independent to compare
    (old / "provenance.json").write_text(json.dumps({"config_hash": "c", "code_commit": "new"}))
    assert isinstance(start_check.validate_bundle(bundle, tmp_path / "out")["random_start"], str)


def test_two_sides_agree_at_equilibrium_and_bracket_a_point_held_shut_or_open():
    """two_sided_table: two exact oracle scans agree at every point (and are within the oracle); a latent held
    shut on the hot side and one held open on the cold side make their points exceptions, and the oracle lies in
    each bracket; a point where both sides are wrong the same way agrees but is flagged by the oracle."""
    exact = _scan()["latents"]
    table = start_check.two_sided_table(exact, exact, pca_table(T_K))
    assert len(table) == len(GRID) and table["agree"].all() and table["within"].all() and table["bracketed"].all()
    hot, cold = exact.copy(), exact.copy()
    T_shut, T_open, T_both = GRID[10], GRID[14], GRID[20]
    assert 1.0 - T_shut / T_K[2] > 0.5 and 0.2 < 1.0 - T_open / T_K[9] < 0.9 and 1.0 - T_both / T_K[12] > 0.2
    hot.loc[(hot["T"] == T_shut) & (hot["rank"] == 3), "M2"] = 0.0  # held shut: reads low
    cold.loc[(cold["T"] == T_open) & (cold["rank"] == 10), "M2"] = 0.99  # held open: reads high
    for side in (hot, cold):  # both sides shut the same latent: they agree, the oracle disagrees
        side.loc[(side["T"] == T_both) & (side["rank"] == 13), "M2"] = 0.0
    table = start_check.two_sided_table(hot, cold, pca_table(T_K)).set_index("T")
    assert set(table.index[~table["agree"]]) == {T_shut, T_open}
    # Ranked M^2: a latent shut (or opened) moves the ranks below it, so the largest gap may be at another rank;
    # the side that holds a latent shut reads lower there, the side that holds one open higher.
    assert table.loc[T_shut, "M2_hot"] < table.loc[T_shut, "M2_cold"] - 0.05
    assert table.loc[T_open, "M2_cold"] > table.loc[T_open, "M2_hot"] + 0.05
    assert table.loc[[T_shut, T_open], "bracketed"].all() and not table.loc[[T_shut, T_open], "within"].any()
    assert table.loc[T_both, "agree"] and not table.loc[T_both, "within"]
    summary = start_check.two_sided_summary(table.reset_index())
    assert summary["points"] == len(GRID) and summary["agree"] == len(GRID) - 2
    assert summary["agree_within_oracle"] == len(GRID) - 3
    assert [e["T"] for e in summary["exceptions"]] == sorted([T_shut, T_open], reverse=True)
    # Without the oracle (an MLP) the table has the two sides only.
    assert "within" not in start_check.two_sided_table(hot, cold)
    with pytest.raises(ValueError, match="train"):
        start_check.two_sided_table(hot[hot["split"] == "test"], cold)


def test_loss_arbitration_counts_where_the_lower_loss_is_the_side_nearer_the_oracle():
    """At two disagreeing points (hot holds a latent shut at one, cold holds one open at the other) the side with
    the lower training loss is the one nearer the oracle at the first and the farther one at the second: the
    count says 1 of 2, and an agreeing point or a point without a loss on one side is not counted."""
    from spectral_collapse.scan import t_label

    exact = _scan()["latents"]
    hot, cold = exact.copy(), exact.copy()
    T_shut, T_open = GRID[10], GRID[14]
    hot.loc[(hot["T"] == T_shut) & (hot["rank"] == 3), "M2"] = 0.0
    cold.loc[(cold["T"] == T_open) & (cold["rank"] == 10), "M2"] = 0.99
    table = start_check.two_sided_table(hot, cold, pca_table(T_K))
    key = {T: (0, t_label(T)) for T in GRID}
    hot_loss = {key[T]: 1.0 for T in GRID}
    cold_loss = {**{key[T]: 1.0 for T in GRID}, key[T_shut]: 0.9, key[T_open]: 0.9}  # cold lower at both
    result = start_check._loss_arbitration(table, hot_loss, cold_loss)
    assert (result["points"], result["agree"]) == (2, 1)
    by_T = {r["T"]: r for r in result["rows"]}
    assert by_T[T_shut]["nearer_oracle"] == "cold" and by_T[T_open]["nearer_oracle"] == "hot"
    assert {r["lower_loss"] for r in result["rows"]} == {"cold"}
    del cold_loss[key[T_open]]
    assert start_check._loss_arbitration(table, hot_loss, cold_loss)["points"] == 1
    # losses closer than LOSS_TIE name no lower side: a tie, never a win; a NaN loss leaves the point out
    cold_loss[key[T_shut]] = 1.0 - start_check.LOSS_TIE / 2
    tied = start_check._loss_arbitration(table, hot_loss, cold_loss)
    assert (tied["points"], tied["ties"], tied["agree"]) == (1, 1, 0) and tied["rows"][0]["lower_loss"] == "tie"
    cold_loss[key[T_shut]] = float("nan")
    assert start_check._loss_arbitration(table, hot_loss, cold_loss)["points"] == 0


def test_two_sided_cli_writes_a_table_per_model_both_runs_hold(tmp_path):
    exact = _scan()["latents"]
    for side in ("hot", "cold"):
        (tmp_path / side / "linear").mkdir(parents=True)
        exact.to_parquet(tmp_path / side / "linear" / "scan_latents.parquet")
    pca_table(T_K).to_parquet(tmp_path / "hot" / "pca.parquet")
    (tmp_path / "hot" / "mlp-d2").mkdir()  # one side only: not compared
    out = start_check.two_sided(tmp_path / "hot", tmp_path / "cold", tmp_path / "out")
    assert set(out) - {"tolerance", "m2_tolerance", "split"} == {"linear"}
    assert out["linear"]["agree"] == out["linear"]["agree_within_oracle"] == len(GRID)
    assert (tmp_path / "out" / "two_sided_linear.csv").is_file() and (tmp_path / "out" / "two_sided.json").is_file()
    with pytest.raises(FileNotFoundError, match="both"):
        start_check.two_sided(tmp_path / "hot", tmp_path / "out", tmp_path / "out2")


def _two_sided_scans():
    """An exact oracle scan as the hot side with rank 3 held shut at one point, and as the cold side with rank 10
    held open at another: the two points where the sides disagree."""
    hot, cold = _scan(), _scan()
    T_shut, T_open = GRID[10], GRID[14]
    hot["latents"].loc[(hot["latents"]["T"] == T_shut) & (hot["latents"]["rank"] == 3), "M2"] = 0.0
    cold["latents"].loc[(cold["latents"]["T"] == T_open) & (cold["latents"]["rank"] == 10), "M2"] = 0.99
    return hot, cold, T_shut, T_open


def test_the_sides_check_removes_the_points_where_the_sides_disagree():
    """equilibrium's fourth check: sides_agree False removes the point and is counted; NaN (not compared) passes
    and is counted; a scan never compared keeps the three-check counts and rule."""
    from spectral_collapse.analysis.equilibrium import equilibrium, first_failed_check

    hot, cold, T_shut, T_open = _two_sided_scans()
    table = start_check.two_sided_table(hot["latents"], cold["latents"], pca_table(T_K))
    runs = start_check.mark_sides(hot["runs"], table)
    assert runs["sides_agree"].eq(0.0).sum() == 2 and runs["sides_agree"].eq(1.0).sum() == len(GRID) - 2
    lat = hot["latents"][hot["latents"]["split"] == "test"]
    ids, counts = equilibrium(lat, runs, CFG["max_m2_drift"])
    assert counts["removed"]["sides"] == 2 and counts["equilibrium"] == len(GRID) - 2
    assert counts["sides_not_compared"] == 0 and "sides_agree" in counts["rule"]
    assert {float(runs.set_index("run_id").loc[r, "T"]) for r in set(runs["run_id"]) - ids} == {T_shut, T_open}
    runs.loc[runs["T"] == GRID[0], "sides_agree"] = np.nan
    assert equilibrium(lat, runs, CFG["max_m2_drift"])[1]["sides_not_compared"] == 1
    plain_ids, plain = equilibrium(lat, hot["runs"], CFG["max_m2_drift"])
    assert plain == {"points": len(GRID), "removed": {"loss_rule": 0, "drift": 0, "stability": 0},
                     "equilibrium": len(GRID), "stability_not_checked": len(GRID), "stability_checked": False,
                     "max_m2_drift": CFG["max_m2_drift"],
                     "rule": "converged (loss rule) AND max m2_drift <= max_m2_drift AND stable is not False"}
    assert len(plain_ids) == len(GRID) and list(plain) == ["points", "removed", "equilibrium",
                                                           "stability_not_checked", "stability_checked",
                                                           "max_m2_drift", "rule"]
    assert (first_failed_check(lat, hot["runs"], CFG["max_m2_drift"])["failed"] == "").all()


def test_two_sided_analysis_fits_only_points_at_equilibrium_from_both_sides():
    """The hot side analysed with the two-sided check: the two disagreeing points are the only exceptions, each
    with its reason and gap; the thresholds, fitted on the rest, are within 2% of the oracle at every resolved
    rank; a seed with no point at equilibrium resolves nothing (no fallback fit on unaccepted points)."""
    hot, cold, T_shut, T_open = _two_sided_scans()
    table = start_check.two_sided_table(hot["latents"], cold["latents"], pca_table(T_K))
    result = start_check.two_sided_analysis(hot, table, pca_table(T_K), CFG, "linear")
    assert result["at_equilibrium"] == len(GRID) - 2 and result["removed_by"]["sides"] == 2
    exceptions = result["not_at_equilibrium"]
    assert [e["T"] for e in exceptions] == [T_shut, T_open] and {e["check"] for e in exceptions} == {"sides"}
    assert all("ranked M^2 differ by" in e["reason"] for e in exceptions)
    assert result["resolved_ranks"]["0"] >= 10 and result["ranks_within"]["0"] == result["resolved_ranks"]["0"]
    assert result["accepted_within_oracle"] == {"0": len(GRID) - 2} and result["accepted_off_oracle"] == []
    # Both sides wrong the same way at one point: accepted (they agree), and graded off the oracle.
    T_both = GRID[20]
    for side in (hot, cold):
        side["latents"].loc[(side["latents"]["T"] == T_both) & (side["latents"]["rank"] == 13), "M2"] = 0.0
    both = start_check.two_sided_table(hot["latents"], cold["latents"], pca_table(T_K))
    wrong = start_check.two_sided_analysis(hot, both, pca_table(T_K), CFG, "linear")
    assert wrong["at_equilibrium"] == len(GRID) - 2 and wrong["accepted_within_oracle"] == {"0": len(GRID) - 3}
    assert [e["T"] for e in wrong["accepted_off_oracle"]] == [T_both]
    # ... unless the cold side is held to its own checks: there it had not converged (issue 19's linear point at
    # T = 2.5e-6), so the point is removed with that reason, and every accepted point is on the oracle again.
    cold["latents"].loc[cold["latents"]["T"] == T_both, "converged"] = False
    confirmed = start_check.confirm_cold_side(both, cold, CFG["max_m2_drift"]).set_index("T")
    assert confirmed.loc[T_both, "cold_failed"] == "loss_rule" and not confirmed.loc[T_both, "confirmed"]
    assert confirmed["confirmed"].sum() == len(GRID) - 3 and (confirmed.drop(T_both)["cold_failed"] == "").all()
    held = start_check.two_sided_analysis(hot, confirmed.reset_index(), pca_table(T_K), CFG, "linear")
    assert held["at_equilibrium"] == len(GRID) - 3 and held["accepted_off_oracle"] == []
    reason = {e["T"]: e["reason"] for e in held["not_at_equilibrium"]}[T_both]
    assert reason.startswith("the two sides agree, but the cold side is not at equilibrium: not converged")
    summary = start_check.two_sided_summary(confirmed.reset_index())
    assert summary["confirmed"] == len(GRID) - 3 and [e["T"] for e in summary["cold_not_at_equilibrium"]] == [T_both]
    with pytest.raises(ValueError, match="cold side's runs table"):
        start_check.confirm_cold_side(both, {**cold, "runs": cold["runs"][cold["runs"]["T"] != T_both]}, 0.1)
    assert wrong["accepted_off_oracle"][0]["hot_error"] == wrong["accepted_off_oracle"][0]["cold_error"] > 0.2
    disagree_everywhere = table.assign(agree=False)
    none = start_check.two_sided_analysis(hot, disagree_everywhere, pca_table(T_K), CFG, "linear")
    assert none["at_equilibrium"] == 0 and none["resolved_ranks"]["0"] == 0 and len(none["not_at_equilibrium"]) == len(GRID)


def test_two_sided_cli_analyses_a_whole_scan(tmp_path):
    hot, cold, T_shut, T_open = _two_sided_scans()
    for side, scan in (("hot", hot), ("cold", cold)):
        (tmp_path / side / "linear").mkdir(parents=True)
        for name, t in scan.items():
            t.to_parquet(tmp_path / side / "linear" / f"scan_{name}.parquet")
    pca_table(T_K).to_parquet(tmp_path / "hot" / "pca.parquet")
    start_check.main(["--two-sided", str(tmp_path / "hot"), str(tmp_path / "cold"), "--out", str(tmp_path / "out")])
    import json

    summary = json.loads((tmp_path / "out" / "two_sided.json").read_text())["linear"]
    assert summary["agree"] == len(GRID) - 2 and summary["analysis"]["at_equilibrium"] == len(GRID) - 2
    marked = pd.read_parquet(tmp_path / "out" / "scan_runs_linear.parquet")
    assert set(marked.loc[marked["sides_agree"] == 0.0, "T"]) == {T_shut, T_open}


def test_against_random_start_compares_active_sets_thresholds_and_losses(tmp_path):
    """A scan against random starts of the same spectrum: every point the same, thresholds within, losses equal;
    against random starts whose thresholds lie 10% higher, the scan has fewer active latents where they differ."""
    for name, scan in (("scan", _scan()), ("random_start", _scan(T_K * 1.1))):
        scan["runs"]["test_loss"] = scan["runs"]["T"] * 2.0
        (tmp_path / name / "linear").mkdir(parents=True)
        for table, frame in scan.items():
            frame.to_parquet(tmp_path / name / "linear" / f"scan_{table}.parquet")
    for name in ("scan", "random_start"):
        pca_table(T_K).to_parquet(tmp_path / name / "pca.parquet")
    same = start_check.against_random_start(tmp_path / "scan", tmp_path / "scan", tmp_path / "same")
    moved = start_check.against_random_start(tmp_path / "scan", tmp_path / "random_start", tmp_path / "moved")["linear"]
    assert moved["scan_fewer_active"] > 0 and moved["scan_more_active"] == 0 and moved["ranks_within"] == 0
    assert moved["test_loss_points"] == len(GRID) and (tmp_path / "moved" / "start_losses_linear.csv").is_file()
    assert same["linear"]["same_active_set"] == len(GRID) and same["linear"]["test_loss_relative_median"] == 0.0
