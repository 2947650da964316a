"""Does the way a scan point was started move its equilibrium? (issue 19, the cold-end method's validation)

Two checks, both on cached tables (nothing trains):

1. **Against the exact linear oracle** (``oracle_table``, ``threshold_table``): at every point at equilibrium, the
   ranked M_k^2 of the linear model on the training split is within ``M2_TOL`` of the oracle's [1 - T/T_k]_+,
   T_k = lambda_k / V of the training PCA; and every resolved threshold T_c,k is within ``TC_TOL`` of T_k.
2. **Against independent starts** (``start_agreement``): two scans of one model and seed, started differently
   (e.g. the warm-start chain and starts from the initialisation), where both are at equilibrium at a T: the
   same number of active latents; and their thresholds, fitted by the same analysis on the same split from
   each scan's equilibrium points, within ``AGREE_TOL`` for the ranks both resolve. A disagreement is a finding
   (hysteresis), listed point by point, never averaged away.
3. **From both sides** (``two_sided_table``): a chain from the hot side (latents open along it) and a chain from
   the cold side (latents collapse along it) of one model and seed. A latent held shut by the hot side reads
   low, one held open by the cold side reads high, so where every ranked M_k^2 of the two is within
   ``BRACKET_TOL`` the point is at equilibrium from both sides; elsewhere the two bracket it and the point is
   an exception, both values listed. For the linear family the table says whether the oracle lies in the
   bracket and whether the agreeing points are within ``M2_TOL`` of it (the rule's validation).
4. **The analysis from both sides** (``two_sided_analysis``): the hot side's scan with each point marked by
   whether the sides agree (``mark_sides``: the runs table's ``sides_agree``, the fourth check of
   ``equilibrium.equilibrium``), analysed as any scan: thresholds, d_eff and claims come only from the points at
   equilibrium from both sides, and every other point is listed with the first check it failed and why.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..oracle import m2 as m2_oracle
from ..paths import ANALYSIS_ROOT, PCA_TABLE
from ..scan import t_label
from .equilibrium import equilibrium, first_failed_check
from .spectrum import eval_split

M2_TOL = 0.05  # issue 19: every accepted point within 0.05 of the oracle's M^2
TC_TOL = 0.02  # resolved thresholds within 2% of the training PCA's lambda_k / V
AGREE_TOL = 0.05  # two starts: thresholds within 5%
BRACKET_TOL = 0.05  # the two sides of a point agree when every ranked M_k^2 is within this
LOSS_TIE = 1e-3  # two sides' training losses closer than this (relative) name no lower side


def oracle_table(latents: pd.DataFrame, runs: pd.DataFrame, pca: pd.DataFrame, max_drift: float,
                 split: str = "train") -> pd.DataFrame:
    """One row per point at equilibrium: the largest |M_k^2 - (1 - T / T_k)_+| over ranks on ``split`` (ranked
    M^2 against the oracle's modes in order), the rank where it is, and whether it is within M2_TOL."""
    eq, _ = equilibrium(eval_split(latents), runs, max_drift)
    T_k = np.sort(pca["lambda_over_V"].to_numpy(float))[::-1]
    ranked = _ranked_m2(latents, split)
    lat = latents[(latents["split"] == split) & latents["run_id"].isin(eq)]
    rows = []
    for run_id, seed, T in lat[["run_id", "seed", "T"]].drop_duplicates().itertuples(index=False):
        T, m2 = ranked[(int(seed), t_label(T))]
        n = min(len(m2), len(T_k))
        oracle = m2_oracle(T, T_k[:n])
        diff = np.abs(m2[:n] - oracle)
        worst = int(np.argmax(diff))
        rows.append({"run_id": run_id, "seed": int(seed), "T": T, "max_abs_dM2": float(diff[worst]),
                     "worst_rank": worst + 1, "M2": float(m2[worst]), "M2_oracle": float(oracle[worst]),
                     "within": bool(diff[worst] <= M2_TOL)})
    return pd.DataFrame(rows).sort_values(["seed", "T"], ascending=[True, False], ignore_index=True)


def _ranked_m2(latents: pd.DataFrame, split: str) -> dict[tuple[int, str], tuple[float, np.ndarray]]:
    """{(seed, T label): (T, the M_k^2 of ``split``, largest first)}; points are matched by their T label
    (``scan.t_label``), never by float equality."""
    lat = latents[latents["split"] == split] if "split" in latents else latents
    if lat.empty:
        raise ValueError(f"no {split!r} rows in the latents table: measure the {split} split")
    return {(int(seed), t_label(T)): (float(T), np.sort(g["M2"].to_numpy(float))[::-1])
            for (seed, T), g in lat.groupby(["seed", "T"])}


def two_sided_table(hot: pd.DataFrame, cold: pd.DataFrame, pca: pd.DataFrame | None = None,
                    split: str = "train") -> pd.DataFrame:
    """One row per (seed, T) of both latents tables: the largest |M_k^2(hot) - M_k^2(cold)| over ranks, its rank
    and both values, ``agree`` (within BRACKET_TOL at every rank). With ``pca`` (the linear family's oracle,
    T_k = lambda_k / V): the oracle at that rank, each side's largest distance from the oracle, ``bracketed``
    (at every rank the oracle lies between the two sides, up to BRACKET_TOL) and ``within`` (both sides within
    M2_TOL of the oracle at every rank)."""
    a, b = _ranked_m2(hot, split), _ranked_m2(cold, split)
    T_k = None if pca is None else np.sort(pca["lambda_over_V"].to_numpy(float))[::-1]
    rows = []
    for key in sorted(set(a) & set(b), key=lambda k: (k[0], -a[k][0])):
        seed, T = key[0], a[key][0]
        n = min(len(a[key][1]), len(b[key][1]), *(() if T_k is None else (len(T_k),)))
        h, c = a[key][1][:n], b[key][1][:n]
        diff = np.abs(h - c)
        k = int(np.argmax(diff))
        row = {"seed": seed, "T": T, "max_abs_dM2": float(diff[k]), "rank": k + 1, "M2_hot": float(h[k]),
               "M2_cold": float(c[k]), "agree": bool(diff[k] <= BRACKET_TOL)}
        if T_k is not None:
            oracle = m2_oracle(T, T_k[:n])
            lo, hi = np.minimum(h, c) - BRACKET_TOL, np.maximum(h, c) + BRACKET_TOL
            row.update({"M2_oracle": float(oracle[k]), "hot_error": float(np.abs(h - oracle).max()),
                        "cold_error": float(np.abs(c - oracle).max()),
                        "bracketed": bool(np.all((lo <= oracle) & (oracle <= hi))),
                        "within": bool(max(np.abs(h - oracle).max(), np.abs(c - oracle).max()) <= M2_TOL)})
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["unmatched"] = {"hot_only": len(set(a) - set(b)), "cold_only": len(set(b) - set(a))}
    return table


def two_sided_summary(table: pd.DataFrame) -> dict[str, Any]:
    """The counts of ``two_sided_table``: points, agreeing points and, with the oracle, how many agreeing points
    are within it (the rule's validation: all of them) and how many points it brackets; the exceptions."""
    agree = table[table["agree"]]
    out: dict[str, Any] = {"points": int(len(table)), "agree": int(len(agree)),
                           "unmatched": dict(table.attrs.get("unmatched", {"hot_only": 0, "cold_only": 0})),
                           "exceptions": table[~table["agree"]].to_dict("records")}
    if "confirmed" in table:  # confirm_cold_side: agreeing points where the cold side passes its own checks
        out["confirmed"] = int(table["confirmed"].sum())
        out["cold_not_at_equilibrium"] = table[table["agree"] & ~table["confirmed"]].to_dict("records")
    if "within" in table:
        out.update({"agree_within_oracle": int(agree["within"].sum()),
                    "bracketed": int(table["bracketed"].sum())})
    return out


def confirm_cold_side(table: pd.DataFrame, cold: Mapping[str, pd.DataFrame], max_drift: float) -> pd.DataFrame:
    """``table`` (``two_sided_table``) with ``cold_failed``, the first one-sided check (loss rule, drift,
    stability) the cold side's point fails ("" where it passes all three), and ``confirmed``: the sides agree and
    the cold side passes. Why: agreement with a side that has not settled is no test. On the linear family the
    cold side at T = 2.5e-6, at its update budget, agrees with the hot side on a state 0.38 off the oracle's M^2.
    The hot side's own checks are the analysis' first three; this makes the fourth hold the cold side to them."""
    checks = first_failed_check(eval_split(cold["latents"]), cold["runs"], max_drift)
    info = cold["runs"].drop_duplicates("run_id").set_index("run_id")
    failed = {(int(info.loc[rid, "seed"]), t_label(info.loc[rid, "T"])): str(check)
              for rid, check in checks["failed"].items() if rid in info.index}
    out = table.copy()
    keys = [(int(seed), t_label(T)) for seed, T in table[["seed", "T"]].itertuples(index=False)]
    missing = [key for key in keys if key not in failed]
    if missing:
        raise ValueError(f"the cold side's runs table has no run at (seed, T) {missing[:3]}: its latents and runs "
                         "tables are not of one scan; collect the cold side's scan again")
    out["cold_failed"] = [failed[key] for key in keys]
    out["confirmed"] = out["agree"] & (out["cold_failed"] == "")
    return out


def mark_sides(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (one side's runs table) with ``sides_agree``: 1.0 where ``two_sided_table`` found the two sides
    agreeing at the run's (seed, T) (and, with ``confirm_cold_side``'s ``confirmed``, the cold side at equilibrium
    by its own checks), 0.0 where not, NaN where the other side has no such point."""
    flag = "confirmed" if "confirmed" in table else "agree"
    flags = {(int(seed), t_label(T)): float(ok) for seed, T, ok in table[["seed", "T", flag]].itertuples(index=False)}
    out = runs.copy()
    out["sides_agree"] = [flags.get((int(seed), t_label(T)), np.nan) for seed, T in zip(runs["seed"], runs["T"])]
    return out


REASONS = {  # why a point is not at equilibrium, by the first check it failed (equilibrium.CHECKS)
    "loss_rule": "not converged by the loss rule within the update budget",
    "drift": "an M_k^2 still drifting faster than analysis.max_m2_drift",
    "stability": "a perturbation of its collapsed latents did not relax back (stability check)",
    "sides": "the hot and cold sides disagree",
}


def not_at_equilibrium(latents: pd.DataFrame, runs: pd.DataFrame, max_drift: float,
                       table: pd.DataFrame | None = None, checks: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Every point not at equilibrium: seed, T, the first check it failed and the reason, with the two sides'
    largest ranked-M^2 gap (``table``, ``two_sided_table``) where the sides disagree. ``checks``:
    ``first_failed_check`` of the evaluation split, when the caller has it."""
    if checks is None:
        checks = first_failed_check(eval_split(latents), runs, max_drift)
    info = runs.drop_duplicates("run_id").set_index("run_id")
    gaps = {} if table is None else {(int(r.seed), t_label(r.T)): r for r in table.itertuples(index=False)}
    out = []
    for run_id, failed in checks["failed"].items():
        if not failed:
            continue
        seed, T = int(info.loc[run_id, "seed"]), float(info.loc[run_id, "T"])
        row = {"seed": seed, "T": T, "check": failed, "reason": REASONS[failed]}
        gap = gaps.get((seed, t_label(T)))
        if failed == "sides" and gap is not None and gap.agree:  # confirm_cold_side: the cold side failed
            row["reason"] = (f"the two sides agree, but the cold side is not at equilibrium: "
                             f"{REASONS[gap.cold_failed]}")
        elif failed == "sides" and gap is not None:
            row["reason"] += (f": ranked M^2 differ by {gap.max_abs_dM2:.3f} at rank {gap.rank} "
                              f"(hot {gap.M2_hot:.3f}, cold {gap.M2_cold:.3f})")
        out.append(row)
    return sorted(out, key=lambda r: (r["seed"], -r["T"]))


def two_sided_analysis(hot: Mapping[str, pd.DataFrame], table: pd.DataFrame, pca: pd.DataFrame,
                       cfg: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The hot side's scan (``hot``: latents, pruning, runs) analysed with the two-sided check (``table``):
    per seed the points at equilibrium from both sides, the resolved thresholds (their rate on the train split),
    every other point with its reason; for the linear family each resolved T_c against the training PCA's
    lambda_k / V (within TC_TOL). Why the hot side's tables: where the sides agree, every ranked M_k^2 of the
    two is within BRACKET_TOL, so either side measures the same state."""
    marked = {**hot, "runs": mark_sides(hot["runs"], table)}
    max_drift = float(cfg["max_m2_drift"])
    evaluated = eval_split(marked["latents"])
    checks = first_failed_check(evaluated, marked["runs"], max_drift)
    eq, counts = equilibrium(evaluated, marked["runs"], max_drift, checks=checks)
    T_c = _thresholds_on(marked, pca, cfg, model, "train")
    lat = marked["latents"]
    seeds_at_eq = {int(s) for s in lat.loc[lat["run_id"].isin(eq), "seed"]}
    T_c = {seed: (ranks if seed in seeds_at_eq else {}) for seed, ranks in T_c.items()}  # no fallback fit
    out: dict[str, Any] = {"points": counts["points"], "at_equilibrium": counts["equilibrium"],
                           "removed_by": counts["removed"], "sides_not_compared": counts["sides_not_compared"],
                           "not_at_equilibrium": not_at_equilibrium(marked["latents"], marked["runs"], max_drift,
                                                                    table, checks=checks),
                           "resolved_ranks": {str(seed): len(ranks) for seed, ranks in T_c.items()},
                           "T_c": {str(seed): {str(k): t for k, t in ranks.items()} for seed, ranks in T_c.items()}}
    if model == "linear":
        lam = pca.sort_values("k")["lambda_over_V"].to_numpy(float)
        errors = {str(seed): {str(k): t / lam[k - 1] - 1.0 for k, t in ranks.items()} for seed, ranks in T_c.items()}
        out["T_c_relative_error"] = errors
        out["ranks_within"] = {seed: int(sum(abs(e) <= TC_TOL for e in errs.values())) for seed, errs in errors.items()}
        out.update(_accepted_against_oracle(marked["runs"], eq, table))
    return out


def _accepted_against_oracle(runs: pd.DataFrame, eq: set, table: pd.DataFrame) -> dict[str, Any]:
    """The linear family's points at equilibrium graded against the oracle (issue 19: every accepted point within
    M2_TOL of the oracle's M^2): per seed how many are, and each that is not, with both sides' largest distance.
    Why: two sides can agree on the same wrong state (both slow at the cold end), which only the oracle sees."""
    accepted = runs[runs["run_id"].isin(eq)]
    keys = {(int(s), t_label(T)) for s, T in accepted[["seed", "T"]].itertuples(index=False)}
    graded = table[[(int(s), t_label(T)) in keys for s, T in table[["seed", "T"]].itertuples(index=False)]]
    within = {str(seed): int(g["within"].sum()) for seed, g in graded.groupby("seed")}
    off = [{"seed": int(r.seed), "T": float(r.T), "hot_error": float(r.hot_error), "cold_error": float(r.cold_error)}
           for r in graded[~graded["within"]].itertuples(index=False)]
    return {"accepted_within_oracle": within, "accepted_off_oracle": off}


def side_disagreement(hot: Mapping[str, pd.DataFrame], cold: Mapping[str, pd.DataFrame], table: pd.DataFrame,
                      pca: pd.DataFrame, cfg: Mapping[str, Any], model: str) -> dict[str, Any]:
    """Where the two sides disagree (``table``: ``two_sided_table``), what each side holds there: on which side
    fewer latents are active (training split), which side has the lower validation loss and the hot/cold loss
    ratio's range, and at how many of those points each side alone passes the three one-sided checks (loss
    rule, drift, stability). Then each side analysed on its own with those checks: the points it accepts and its
    resolved thresholds per seed. Why: a side whose states pass every one-sided check at a higher loss than the
    other side's is metastable there (hysteresis), not at equilibrium; the one-sided counts say what the
    two-sided rule costs, and are no replacement for it."""
    max_drift = float(cfg["max_m2_drift"])
    apart = {(int(r.seed), t_label(r.T)) for r in table.itertuples(index=False) if not r.agree}
    per_side: dict[str, Any] = {}
    for side, tables in (("hot", hot), ("cold", cold)):
        lat, runs = tables["latents"], tables["runs"].drop_duplicates("run_id")
        train = lat[lat["split"] == "train"]
        active = {(int(s), t_label(T)): int(g["active"].sum()) for (s, T), g in train.groupby(["seed", "T"])}
        loss, train_loss = ({} if column not in runs else {  # a runs table without losses: not compared
            (int(s), t_label(T)): float(v) for s, T, v in runs[["seed", "T", column]].itertuples(index=False)}
            for column in ("validation_loss", "train_loss"))
        evaluated = eval_split(lat)
        checks = first_failed_check(evaluated, tables["runs"], max_drift)
        info = runs.set_index("run_id")
        passed = {(int(info.loc[rid, "seed"]), t_label(info.loc[rid, "T"]))
                  for rid in checks.index[checks["failed"] == ""] if rid in info.index}
        eq, counts = equilibrium(evaluated, tables["runs"], max_drift, checks=checks)
        seeds_at_eq = {int(s) for s in lat.loc[lat["run_id"].isin(eq), "seed"]}
        T_c = {seed: (ranks if seed in seeds_at_eq else {})
               for seed, ranks in _thresholds_on(tables, pca, cfg, model, "train").items()}
        per_side[side] = {"active": active, "loss": loss, "train_loss": train_loss, "passed": passed,
                          "at_equilibrium": counts["equilibrium"],
                          "resolved_ranks": {str(seed): len(ranks) for seed, ranks in T_c.items()}}
        if model == "linear":  # each side alone against the oracle: what the two-sided rule guards against
            lam = pca.sort_values("k")["lambda_over_V"].to_numpy(float)
            per_side[side]["ranks_within"] = {str(seed): int(sum(abs(t / lam[k - 1] - 1.0) <= TC_TOL
                                                                 for k, t in ranks.items()))
                                              for seed, ranks in T_c.items()}
    h, c = per_side["hot"], per_side["cold"]
    both = sorted(p for p in apart if p in h["active"] and p in c["active"])
    losses = [(h["loss"][p], c["loss"][p]) for p in both if p in h["loss"] and p in c["loss"]]
    ratios = [hot / cold for hot, cold in losses]
    out: dict[str, Any] = {"points": len(both),
                           "hot_fewer_active": sum(h["active"][p] < c["active"][p] for p in both),
                           "hot_more_active": sum(h["active"][p] > c["active"][p] for p in both),
                           "loss_points": len(losses),
                           "cold_lower_loss": sum(cold < hot for hot, cold in losses),
                           "loss_ratio_hot_over_cold": [float(min(ratios)), float(max(ratios))] if ratios else None,
                           "hot_passes_one_sided_checks": sum(p in h["passed"] for p in both),
                           "cold_passes_one_sided_checks": sum(p in c["passed"] for p in both),
                           "one_sided": {side: {k: v[k] for k in ("at_equilibrium", "resolved_ranks", "ranks_within")
                                                if k in v} for side, v in per_side.items()}}
    if model == "linear" and "hot_error" in table:
        out["loss_arbitration"] = _loss_arbitration(table, h["train_loss"], c["train_loss"])
    return out


def _loss_arbitration(table: pd.DataFrame, hot_loss: Mapping[tuple[int, str], float],
                      cold_loss: Mapping[tuple[int, str], float]) -> dict[str, Any]:
    """Could the training objective pick the equilibrium where the sides disagree? Per disagreeing point of a
    linear pair: the side with the lower training loss (the objective both sides minimise, at the same beta) and
    the side nearer the exact oracle (its largest |M_k^2 - oracle|); ``agree`` counts the points where they are
    the same side, ``ties`` the points whose losses differ by less than LOSS_TIE (relative: no lower side, not
    counted in ``agree``); a point without a finite loss on both sides is left out. Why: choosing the lower-loss
    side would settle every disagreeing point, but only if the oracle confirms that the lower loss marks the
    equilibrium; a count near half of the decided points says it does not."""
    rows = []
    for r in table[~table["agree"]].itertuples(index=False):
        key = (int(r.seed), t_label(r.T))
        hot, cold = hot_loss.get(key, np.nan), cold_loss.get(key, np.nan)
        if not (np.isfinite(hot) and np.isfinite(cold)) or cold == 0:
            continue
        ratio = hot / cold
        lower = "tie" if abs(ratio - 1.0) < LOSS_TIE else "hot" if hot < cold else "cold"
        nearer = "hot" if r.hot_error < r.cold_error else "cold"
        rows.append({"seed": key[0], "T": float(r.T), "loss_hot_over_cold": ratio, "lower_loss": lower,
                     "nearer_oracle": nearer})
    return {"points": len(rows), "ties": sum(r["lower_loss"] == "tie" for r in rows), "tie_tolerance": LOSS_TIE,
            "agree": sum(r["lower_loss"] == r["nearer_oracle"] for r in rows), "rows": rows}


def threshold_table(analysis: Mapping[str, Any], pca: pd.DataFrame) -> pd.DataFrame:
    """Per rank of a linear model's analysis: T_c (its thresholds split), lambda_k / V, the relative error, its
    status, and for resolved ranks whether the error is within TC_TOL."""
    lam = pca.sort_values("k")["lambda_over_V"].to_numpy(float)
    rows = []
    for k, (T_c, status) in enumerate(zip(analysis["T_c"], analysis["threshold_status"]), start=1):
        T_c = np.nan if T_c is None else float(T_c)
        err = T_c / lam[k - 1] - 1.0 if k <= len(lam) else np.nan
        rows.append({"rank": k, "T_c": T_c, "lambda_over_V": float(lam[k - 1]) if k <= len(lam) else np.nan,
                     "relative_error": float(err), "status": status,
                     "within": bool(abs(err) <= TC_TOL) if status == "fitted" else None})
    return pd.DataFrame(rows)


def _thresholds_on(tables: Mapping[str, pd.DataFrame], pca: pd.DataFrame, cfg: Mapping[str, Any], model: str,
                   split: str) -> dict[int, dict[int, float]]:
    """{seed: {rank: T_c}} of the resolved thresholds, every seed analysed on its own, from ``split``'s rate."""
    from .model_analysis import analyse_model

    out = {}
    for seed in sorted(int(s) for s in tables["latents"]["seed"].unique()):
        lat = tables["latents"]
        keep = lat["seed"] == seed
        if split != "train":  # the analysis fits on the train split when it is there: drop it to fit on `split`
            keep &= lat["split"] != "train"
        pick = {name: t[t["seed"] == seed] for name, t in tables.items() if name != "latents"}
        _, _, result = analyse_model(lat[keep], pick["pruning"], pick["runs"], pca, cfg, model)
        out[seed] = {k: float(t) for k, (t, s) in enumerate(zip(result["T_c"], result["threshold_status"]), 1)
                     if s == "fitted"}
    return out


def start_agreement(a: Mapping[str, pd.DataFrame], b: Mapping[str, pd.DataFrame], pca: pd.DataFrame,
                    cfg: Mapping[str, Any], model: str, split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, thresholds) comparing scans ``a`` and ``b`` of one model ({"latents", "pruning", "runs"} tables):

    - points: per seed and T where both are at equilibrium, the number of active latents (on the eval split)
      of each and whether they agree;
    - thresholds: per seed and rank resolved in both, T_c of each on ``split`` and the relative difference
      (b / a - 1), within AGREE_TOL or not.
    """
    max_drift = float(cfg["max_m2_drift"])
    active = {}
    for name, t in (("a", a), ("b", b)):
        lat = eval_split(t["latents"])
        eq, _ = equilibrium(lat, t["runs"], max_drift)
        sub = lat[lat["run_id"].isin(eq)]
        active[name] = sub.groupby(["seed", "T"])["active"].sum().rename(f"n_active_{name}")
    points = pd.concat([active["a"], active["b"]], axis=1, join="inner").reset_index()
    points["agree"] = points["n_active_a"] == points["n_active_b"]
    points = points.sort_values(["seed", "T"], ascending=[True, False], ignore_index=True)
    ta, tb = _thresholds_on(a, pca, cfg, model, split), _thresholds_on(b, pca, cfg, model, split)
    rows = []
    for seed in sorted(set(ta) & set(tb)):
        for k in sorted(set(ta[seed]) & set(tb[seed])):
            diff = tb[seed][k] / ta[seed][k] - 1.0
            rows.append({"seed": seed, "rank": k, "T_c_a": ta[seed][k], "T_c_b": tb[seed][k],
                         "relative_difference": diff, "within": bool(abs(diff) <= AGREE_TOL)})
    return points, pd.DataFrame(rows, columns=["seed", "rank", "T_c_a", "T_c_b", "relative_difference", "within"])


TABLES = ("latents", "pruning", "runs")


def scanned_models(analysis: Path, tables: tuple[str, ...] = TABLES) -> list[str]:
    """The models of an analysis folder (``results/analysis``) that hold every one of ``tables``."""
    return sorted(p.name for p in Path(analysis).iterdir()
                  if p.is_dir() and all((p / f"scan_{t}.parquet").is_file() for t in tables))


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(folder / f"scan_{name}.parquet") for name in TABLES}


def _present_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """The scan tables ``folder`` holds, of TABLES (a side may have been collected without all of them)."""
    return {name: pd.read_parquet(path) for name in TABLES if (path := folder / f"scan_{name}.parquet").is_file()}


def _same_run(a: Path, b: Path) -> bool:
    """Whether two bundles' provenance records name the same run (config hash and code commit)."""
    if not (a.is_file() and b.is_file()):
        return False
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    return (ra.get("config_hash"), ra.get("code_commit")) == (rb.get("config_hash"), rb.get("code_commit"))


def validate_bundle(bundle: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Both checks on the reference bundle (``bundle``/results, the chain) against its ``random_start`` tables;
    writes the tables as CSV and ``validation.json`` (the counts) to ``out`` (default ``bundle``/validation)."""
    import yaml

    bundle = Path(bundle)
    out = Path(out) if out else bundle / "validation"
    out.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((bundle / "config.yaml").read_text())["analysis"]
    analysis = bundle / ANALYSIS_ROOT
    pca = pd.read_parquet(bundle / PCA_TABLE)
    validation: dict[str, Any] = {"m2_tolerance": M2_TOL, "T_c_tolerance": TC_TOL, "agreement_tolerance": AGREE_TOL}
    if (analysis / "linear").is_dir():
        lin = _tables(analysis / "linear")
        m2 = oracle_table(lin["latents"], lin["runs"], pca, float(cfg["max_m2_drift"]), split="train")
        thr = threshold_table(json.loads((analysis / "linear/analysis.json").read_text()), pca)
        m2.to_csv(out / "linear_oracle_m2.csv", index=False)
        thr.to_csv(out / "linear_oracle_thresholds.csv", index=False)
        fitted = thr[thr["status"] == "fitted"]
        validation["linear_oracle"] = {
            "points_at_equilibrium": int(len(m2)), "points_within": int(m2["within"].sum()),
            "worst_point": m2.loc[m2["max_abs_dM2"].idxmax()].to_dict() if len(m2) else None,
            "resolved_ranks": int(len(fitted)), "ranks_within": int(fitted["within"].astype(bool).sum()),
            "max_relative_error": float(fitted["relative_error"].abs().max()) if len(fitted) else None}
    random_start = bundle / "random_start"
    validation["random_start"] = {}
    if _same_run(bundle / "provenance.json", random_start / "provenance.json"):
        validation["random_start"] = ("the bundle is the random-start run itself (the same provenance): there is no "
                                      "independent run to compare with")
        folders = []
    else:
        folders = sorted(p for p in random_start.glob("*") if p.is_dir() and (analysis / p.name).is_dir())
    old_pca = pd.read_parquet(random_start / "pca.parquet") if folders else pca
    for folder in folders:
        validation["random_start"][folder.name] = _compare_with_random_start(
            _tables(analysis / folder.name), _tables(folder), old_pca, cfg, folder.name, out)
    (out / "validation.json").write_text(json.dumps(validation, indent=1, default=float) + "\n")
    return validation


def _compare_with_random_start(scan: Mapping[str, pd.DataFrame], random_start: Mapping[str, pd.DataFrame],
                               pca: pd.DataFrame, cfg: Mapping[str, Any], model: str, out: Path) -> dict[str, Any]:
    """``start_agreement`` of a scan (a) and the random starts (b) of its seeds, and the test loss at every
    common point (``test_loss_relative``: the scan's over the random start's, minus 1); writes
    ``start_points_<model>.csv``, ``start_thresholds_<model>.csv``, ``start_losses_<model>.csv``."""
    seeds = set(scan["runs"]["seed"].astype(int))
    random_start = {name: t[t["seed"].astype(int).isin(seeds)] for name, t in random_start.items()}
    points, thresholds = start_agreement(scan, random_start, pca, cfg, model)
    cols = ["seed", "T", "test_loss"]
    if all("test_loss" in t["runs"] for t in (scan, random_start)):
        losses = scan["runs"][cols].merge(random_start["runs"][cols], on=["seed", "T"], suffixes=("_scan", "_random_start"))
    else:  # runs tables without the test split's loss (older tables): nothing to compare
        losses = pd.DataFrame(columns=["seed", "T", "test_loss_scan", "test_loss_random_start"])
    losses["test_loss_relative"] = losses["test_loss_scan"].astype(float) / losses["test_loss_random_start"].astype(float) - 1.0
    for name, table in (("points", points), ("thresholds", thresholds), ("losses", losses)):
        table.to_csv(out / f"start_{name}_{model}.csv", index=False)
    rel = losses["test_loss_relative"]
    return {"points_both_at_equilibrium": int(len(points)), "same_active_set": int(points["agree"].sum()),
            "differing_points": points[~points["agree"]].to_dict("records"),
            "scan_more_active": int((points["n_active_a"] > points["n_active_b"]).sum()),
            "scan_fewer_active": int((points["n_active_a"] < points["n_active_b"]).sum()),
            "ranks_compared": int(len(thresholds)), "ranks_within": int(thresholds["within"].sum()),
            "max_relative_difference": float(thresholds["relative_difference"].abs().max()) if len(thresholds) else None,
            "test_loss_points": int(len(rel)), "test_loss_lower": int((rel < 0).sum()),
            "test_loss_relative_median": float(rel.median()) if len(rel) else None,
            "test_loss_relative_range": [float(rel.min()), float(rel.max())] if len(rel) else None}


def against_random_start(scan: str | Path, random_start: str | Path, out: str | Path,
                         cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The comparison with the random starts (``_compare_with_random_start``) of every model a scan's analysis
    folder (``scan``: its ``<model>/scan_*.parquet``) and the random-start tables (``reference/random_start``)
    both hold, at the scan's seeds; writes the tables and ``random_start.json`` to ``out``."""
    from ..config import load_config

    scan, random_start, out = Path(scan), Path(random_start), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config()["analysis"] if cfg is None else cfg
    pca = pd.read_parquet(random_start / "pca.parquet")
    models = sorted(set(scanned_models(scan)) & set(scanned_models(random_start)))
    if not models:
        raise FileNotFoundError(f"no model's scan tables in both {scan} and {random_start}")
    summary: dict[str, Any] = {"agreement_tolerance": AGREE_TOL}
    for model in models:
        summary[model] = _compare_with_random_start(_tables(scan / model), _tables(random_start / model), pca, cfg,
                                                    model, out)
    (out / "random_start.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return summary


def two_sided(hot: str | Path, cold: str | Path, out: str | Path, split: str = "train",
              cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``two_sided_table`` of every model both analysis folders (``results/analysis`` of a hot-side and a
    cold-side run) hold, with the oracle for the linear family (the hot run's PCA table); writes
    ``two_sided_<model>.csv`` and ``two_sided.json`` (``two_sided_summary`` per model) to ``out``. Where the hot
    folder holds the model's whole scan (latents, pruning, runs), also ``two_sided_analysis`` under the model's
    ``analysis`` (``cfg``: the analysis settings, default config.yaml's) and the marked runs table
    ``scan_runs_<model>.parquet``."""
    from ..config import load_config

    hot, cold, out = Path(hot), Path(cold), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config()["analysis"] if cfg is None else cfg
    pca = pd.read_parquet(hot / "pca.parquet")
    summary: dict[str, Any] = {"tolerance": BRACKET_TOL, "m2_tolerance": M2_TOL, "split": split}
    models = sorted(set(scanned_models(hot, ("latents",))) & set(scanned_models(cold, ("latents",))))
    if not models:
        raise FileNotFoundError(f"no model's scan_latents.parquet in both {hot} and {cold}: run both scans first")
    for model in models:
        hot_tables, cold_tables = _present_tables(hot / model), _present_tables(cold / model)  # each read once
        table = two_sided_table(hot_tables["latents"], cold_tables["latents"], pca if model == "linear" else None,
                                split)
        if "runs" in cold_tables:  # the cold side's own checks need no pruning table
            table = confirm_cold_side(table, cold_tables, float(cfg["max_m2_drift"]))
        table.to_csv(out / f"two_sided_{model}.csv", index=False)
        summary[model] = two_sided_summary(table)
        if len(hot_tables) == len(TABLES):
            summary[model]["analysis"] = two_sided_analysis(hot_tables, table, pca, cfg, model)
            mark_sides(hot_tables["runs"], table).to_parquet(out / f"scan_runs_{model}.parquet")
            if len(cold_tables) == len(TABLES):
                summary[model]["disagreement"] = side_disagreement(hot_tables, cold_tables, table, pca, cfg, model)
    (out / "two_sided.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="issue 19's validation of a start method: the reference bundle "
                                                 "against the oracle and its random starts, or two sides of a scan")
    parser.add_argument("bundle", nargs="?", default="reference")
    parser.add_argument("--out", default=None, help="output folder (default BUNDLE/validation)")
    parser.add_argument("--two-sided", nargs=2, metavar=("HOT", "COLD"), default=None,
                        help="instead: the results/analysis folders of a hot-side and a cold-side run")
    parser.add_argument("--random-start", nargs=2, metavar=("SCAN", "RANDOM_START"), default=None,
                        help="instead: a scan's analysis folder against the random-start tables (reference/random_start)")
    parser.add_argument("--configfile", nargs="*", default=[],
                        help="with --two-sided: the presets the runs used, merged over config.yaml (their analysis "
                             "settings)")
    args = parser.parse_args(argv)
    if args.random_start:
        from ..config import load_config

        result = against_random_start(*args.random_start, out=args.out or "random_start_check",
                                      cfg=load_config(*args.configfile)["analysis"])
    elif args.two_sided:
        from ..config import load_config

        cfg = load_config(*args.configfile)["analysis"]
        result = two_sided(*args.two_sided, out=args.out or "two_sided", cfg=cfg)
    else:
        result = validate_bundle(args.bundle, args.out)
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
