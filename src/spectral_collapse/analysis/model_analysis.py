"""Everything the study reports for one model, per seed and pooled over seeds: its analysis.json.

`analyse_model` turns the scan tables of one model (contracts.md section 4) and the PCA table into
`spectra.parquet`, `d_eff.parquet` and the model's `analysis.json` (keys: docs/summary-keys.md).
Seed -1 in the tables means "all seeds pooled" (every converged scan point of every seed in one fit);
the per-seed rows give the spread across seeds.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .ablation import ablation_order
from .agreement import (identity_r2_ci, leading_ranks, log_identity_r2, rank_agreement, rank_concordance,
                        relative_error)
from .claims import verdict
from .d_eff import d_eff, pca_distortion, pca_heldout_distortion, powerlaw_crossover, powerlaw_fit
from .equilibrium import equilibrium, fit_points, side_flags, stability_flags
from .spectrum import EVAL_SPLIT, eval_split, run_max_drift, utility_spectrum
from .thresholds import (MIN_ACTIVE_POINTS, MIN_MEANFIELD_POINTS, MIN_WINDOW_POINTS, fit_m2_threshold, fit_rate_threshold, fit_window,
                         in_scan, meanfield_exponent, threshold_status, window_support)

POOLED = -1
TOP_RANKS = 5  # ranks over which the linear family's threshold error against PCA is summarised
HEAD_RANKS = 6  # identity R^2 is reported for the head (ranks 1-6) and the tail separately (issue 17, item 6)
HEAD_K = 4  # D~ after the first HEAD_K ranks: the depth comparison ("deeper prunes more")
DRIFT_LIMITS = (0.02, 0.05, 0.1)  # headline numbers at these analysis.max_m2_drift values (issue 17, item 4)


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy -> Python, tuples -> lists, keys -> str."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray, pd.Series)):
        return [_clean(v) for v in list(obj)]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _by_rank(values: np.ndarray, ranks) -> list[float]:
    """values[k - 1] for each rank k (NaN past the end: the model may have more latents than PCA has axes)."""
    return [float(values[k - 1]) if k - 1 < len(values) else np.nan for k in ranks]


def _scan_range(rows: pd.DataFrame) -> tuple[float, float]:
    """(min T, max T) of the scan points used: the T column holds each run's own (effective) T, not a grid."""
    return float(rows["T"].min()), float(rows["T"].max())


def _thresholds(fit_rows: pd.DataFrame, spec: pd.DataFrame, family: str, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Per rank of `spec`: T_c (NaN unless `threshold_status` is "fitted"), T_c_fit (the rate fit whatever its
    status), T_c_m2 (linear family, under the same conditions), n_fit, n_fit_active, n_fit_collapsed (points in
    the rate window: all, active, collapsed) and threshold_status. `fit_rows` are the threshold split's rows."""
    T_range = _scan_range(fit_rows)
    act = float(cfg["active_threshold"])
    window = fit_window(cfg["rate_window"])
    active = set(fit_rows.loc[fit_rows["M2"] > act, "rank"].tolist())
    by_rank = {k: g for k, g in fit_rows.groupby("rank")}
    rows = []
    for k, dD in zip(spec["k"], spec["dD"]):
        g = by_rank.get(k, fit_rows.iloc[:0])
        T, R, M2 = (g[c].to_numpy(float) for c in ("T", "rate", "M2"))
        tc_fit, n = fit_rate_threshold(T, R, dD, window)
        support = window_support(T, M2, dD, window, act)
        status = threshold_status(tc_fit, dD, k in active, T_range, support)
        tc = tc_fit if status == "fitted" else np.nan
        tc_m2 = np.nan
        if family == "linear" and status == "fitted":
            tc_m2 = fit_m2_threshold(T, M2, tc)[0]
            tc_m2 = tc_m2 if in_scan(tc_m2, T_range) else np.nan
        rows.append({"T_c": tc, "T_c_fit": tc_fit, "T_c_m2": tc_m2, "n_fit": n, "n_fit_active": support["n_active"],
                     "n_fit_collapsed": support["n_collapsed"], "threshold_status": status})
    return pd.DataFrame(rows, index=spec.index).astype({"n_fit": int, "n_fit_active": int, "n_fit_collapsed": int})


def _meanfield(fit_rows: pd.DataFrame, T_c: Mapping[int, float], cfg: Mapping[str, Any]) -> dict:
    """The mean-field exponent over the equilibrium points (`fit_rows`, of the threshold split: the M^2 values
    and the thresholds come from the same split) of every rank with a resolved threshold. Collapsed points
    (M^2 <= active_threshold) stay out: they are past the true threshold, and in the window only because of a
    threshold error."""
    mf = meanfield_exponent(fit_rows["T"].to_numpy(float), fit_rows["M2"].to_numpy(float),
                            fit_rows["rank"].map(T_c).to_numpy(float), rank=fit_rows["rank"].to_numpy(),
                            window=tuple(cfg["meanfield_window"]), m2_floor=float(cfg["active_threshold"]))
    return {**mf, "max_m2_drift": float(cfg["max_m2_drift"]), "n_drifting_excluded": 0}


def _one_seed_set(lat: pd.DataFrame, lat_thr: pd.DataFrame, prn: pd.DataFrame, run_ids: set, family: str,
               lam: np.ndarray, cfg: Mapping[str, Any], pca_held: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """Spectrum, thresholds and headline numbers of one set of scan points (one seed, or pooled): utilities,
    distortions and ablations from `lat`/`prn` (held-out split), thresholds and the mean-field exponent from
    `lat_thr` (the threshold split)."""
    spec = utility_spectrum(prn, run_ids)
    fit_rows = lat_thr[lat_thr["run_id"].isin(run_ids)]
    spec = pd.concat([spec, _thresholds(fit_rows, spec, family, cfg)], axis=1)
    spec["lambda_over_V"] = _by_rank(lam, spec["k"])
    spec["rel_err_pca"] = relative_error(spec["T_c"], spec["lambda_over_V"]) if family == "linear" else np.nan

    T_c = spec["T_c"].to_numpy(float)
    dD = spec["dD"].to_numpy(float)
    k = spec["k"].to_numpy()
    usable = np.isfinite(T_c) & (T_c > 0) & np.isfinite(dD) & (dD > 0)
    best = np.concatenate([[_best_D0(prn, run_ids)], spec["best_D"].to_numpy(float)])
    # The model's curve flattens past the last rank ever active in the scan (a floor set by the coldest T):
    # fit only up to the last rank with a threshold, and PCA over the same ranks (like with like).
    resolved = k[usable]
    first, last = cfg["powerlaw_ranks"]
    last = min(last, int(resolved.max()) if len(resolved) else 0)
    model_fit = powerlaw_fit(np.arange(len(best)), best, (first, last))
    pca_curve = pca_distortion(lam)
    concordance = rank_concordance(T_c, dD)
    head_sel, tail_sel = usable & (k <= HEAD_RANKS), usable & (k > HEAD_RANKS)
    unresolved = spec["threshold_status"] == "unresolved"
    headline = {
        "identity_r2": log_identity_r2(T_c[usable], dD[usable]),
        "identity_r2_ci95": identity_r2_ci(T_c[usable], dD[usable]),
        "identity_r2_ranks": int(usable.sum()),
        "identity_r2_head": log_identity_r2(T_c[head_sel], dD[head_sel]),
        "identity_r2_head_ranks": int(head_sel.sum()),
        "identity_r2_tail": log_identity_r2(T_c[tail_sel], dD[tail_sel]),
        "identity_r2_tail_ranks": int(tail_sel.sum()),
        "n_resolved": int((spec["threshold_status"] == "fitted").sum()),
        "n_unresolved": int(unresolved.sum()),
        "unresolved_ranks": spec.loc[unresolved, "k"].astype(int).tolist(),
        "rank_agreement": rank_agreement(T_c, dD),
        "rank_agreement_ranks": leading_ranks(T_c, dD),
        "kendall_tau": concordance["kendall_tau"],
        "rank_inversions": concordance["inversions"],
        "kendall_tau_ranks": concordance["n_ranks"],
        "meanfield": _meanfield(fit_rows, dict(zip(spec["k"], T_c)), cfg),
        "ablation_order": ablation_order(lat, run_ids, float(cfg["active_threshold"])),
        "powerlaw": {"model": model_fit,
                     "pca": powerlaw_fit(np.arange(len(pca_curve)), pca_curve, tuple(model_fit["ranks"])),
                     "pca_heldout": powerlaw_fit(np.arange(len(pca_held)), pca_held, tuple(model_fit["ranks"])),
                     # head/tail crossover (paper: near K = 4), over the ranks the model resolves
                     # (only over resolved ranks: past them D~_K is flat, a tail that is not there)
                     "crossover": powerlaw_crossover(np.arange(len(best)), best, last),
                     "pca_crossover": powerlaw_crossover(np.arange(len(pca_curve)), pca_curve, last)},
        "d_eff": d_eff(best, cfg["d_eff_eps"]),
        "best_D0": float(best[0]),
        "best_D_head": float(best[HEAD_K]) if len(best) > HEAD_K else np.nan,
    }
    if family == "linear":
        err = spec["rel_err_pca"].to_numpy(float)[:TOP_RANKS]
        headline["pca_relative_error_top5_max"] = float(np.nanmax(err)) if np.isfinite(err).any() else np.nan
        err_m2 = relative_error(spec["T_c_m2"], spec["lambda_over_V"])[:TOP_RANKS]
        headline["pca_relative_error_m2_top5_max"] = (
            float(np.nanmax(err_m2)) if np.isfinite(err_m2).any() else np.nan)
    return spec, headline


def _pca_check(spec: pd.DataFrame, head: dict, split: str) -> dict:
    """Linear family: thresholds against lambda_k / V. The PCA is of the training sample; the thresholds come from
    the threshold split (`train` when the run tables hold it). On the test split the held-out blocks' covariance
    (variance a_k lambda_k along PC k) shifts the rates by 1/2 log a_k, and T_c with it (issue 17, item 1)."""
    return {"split": split, "T_c": spec["T_c"].tolist(), "T_c_m2": spec["T_c_m2"].tolist(),
            "relative_error": spec["rel_err_pca"].tolist(),
            "relative_error_top5_max": head["pca_relative_error_top5_max"],
            "relative_error_m2_top5_max": head["pca_relative_error_m2_top5_max"],
            "meanfield_exponent": head["meanfield"]["exponent"], "meanfield_stderr": head["meanfield"]["stderr"]}


def _best_D0(prn: pd.DataFrame, run_ids: set) -> float:
    rows = prn[(prn["K"] == 0) & prn["run_id"].isin(run_ids)]["D_tilde"]
    return float(rows.min()) if len(rows) else float("nan")


def _spread(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def threshold_split(latents: pd.DataFrame) -> tuple[str, str | None]:
    """(split the thresholds are taken from, note): the model's own training-split rate when the tables hold it
    (collapse is a property of the trained model; on a held-out split the rate of mode k carries an offset of
    about 1/2 log a_k, issue 17 item 1), else the evaluation split, with a note that says so."""
    if "split" in latents and (latents["split"] == "train").any():
        return "train", None
    return EVAL_SPLIT, ("no training-split rows in the run tables (not measured for this model): thresholds and "
                        "the mean-field exponent fall back to the held-out test split, whose rate carries an offset "
                        "of about 1/2 log a_k")


def _seed_sets(lat: pd.DataFrame, ids: set, seeds: list[int]) -> list[tuple[int, set]]:
    """The scan points ``ids`` pooled (seed -1), then those of each seed in ``seeds``."""
    seed_of = lat.groupby("run_id")["seed"].first()
    return [(POOLED, ids)] + [(s, {r for r in ids if int(seed_of[r]) == s}) for s in seeds]


def _scalars(family: str) -> dict:
    """The headline scalars reported per seed, pooled and at every drift limit."""
    out = {
        "identity_r2": lambda h: h["identity_r2"],
        "identity_r2_head": lambda h: h["identity_r2_head"],
        "identity_r2_tail": lambda h: h["identity_r2_tail"],
        "n_resolved": lambda h: h["n_resolved"],
        "n_unresolved": lambda h: h["n_unresolved"],
        "rank_agreement": lambda h: h["rank_agreement"],
        "kendall_tau": lambda h: h["kendall_tau"],
        "rank_inversions": lambda h: h["rank_inversions"],
        "meanfield_exponent": lambda h: h["meanfield"]["exponent"],
        "ablation_tau_mean": lambda h: h["ablation_order"]["pooled"]["mean"],
        "powerlaw_exponent": lambda h: h["powerlaw"]["model"]["exponent"],
        "best_D_head": lambda h: h["best_D_head"],
    }
    if family == "linear":
        out["pca_relative_error_top5_max"] = lambda h: h["pca_relative_error_top5_max"]
    return out


PAPER_RANK_AGREEMENT = 13  # the paper's nonlinear VAE: threshold and utility orders agree through 13 ranks


def rank_agreement_claim(h: Mapping[str, Any]) -> int | None:
    """The rank agreement as evidence for the paper's 13: None (not resolved) when every compared rank agrees but
    fewer than 13 were compared (a scan that resolves 12 thresholds cannot show 13), else the agreement (which
    fails below 13 where the orders part before the last compared rank)."""
    agree, compared = h["rank_agreement"], h.get("rank_agreement_ranks")
    if agree is None or (compared is not None and agree >= compared and compared < PAPER_RANK_AGREEMENT):
        return None
    return agree


def _claims(per: Mapping[int, dict], pooled: dict) -> dict:
    """The paper's claims, judged seed by seed (`claims.verdict`): stated only where every seed supports them."""
    tests = {
        "identity_r2 >= 0.95 (paper ~0.98)": (lambda h: h["identity_r2"], lambda v: v >= 0.95),
        "rank_agreement >= 13 (paper 13)": (rank_agreement_claim, lambda v: v >= PAPER_RANK_AGREEMENT),
        "ablation order equals the M^2 order (tau = 1 in every model)": (
            lambda h: h["ablation_order"]["pooled"]["share_tau_1"], lambda v: v == 1.0),
        "mean-field exponent 1 (95% CI contains 1)": (
            lambda h: None if h["meanfield"]["status"] != "resolved" else h["meanfield"]["ci95"],
            lambda v: v[0] is not None and v[0] <= 1.0 <= v[1]),
    }
    out = {}
    for name, (value, holds) in tests.items():
        vals = {s: _clean(value(h)) for s, h in per.items()}
        out[name] = {"per_seed": vals, "pooled": _clean(value(pooled)), "verdict": verdict(vals, holds),
                     "n_seeds": len(vals)}
    return out


def _splits_section(thr_split: str, thr_note: str | None) -> dict[str, Any]:
    """analysis.json ``splits``: which split every number comes from."""
    return {
        "thresholds": thr_split,
        "thresholds_note": thr_note,
        "meanfield": thr_split,
        "utilities": EVAL_SPLIT,
        "best_D": EVAL_SPLIT,
        "ablation": EVAL_SPLIT,
        "identity_r2": f"log dD~_k ({EVAL_SPLIT}) against log T_c,k ({thr_split})",
        "rank_agreement": f"dD~_k ({EVAL_SPLIT}) against T_c,k ({thr_split})",
        "d_eff": EVAL_SPLIT,
        "powerlaw": EVAL_SPLIT,
        "pca": "train (eigenvalues lambda_k/V of the training sample)",
        "pca_heldout": f"{EVAL_SPLIT}, reconstructed with the training eigenvectors",
        "equilibrium": "training record (convergence, M^2 drift on validation) and the stability check",
    }


def _runs_section(lat: pd.DataFrame, runs: pd.DataFrame, all_ids: set, conv: set, eq_counts: dict,
                  max_drift: float, fallback: bool) -> dict[str, Any]:
    """analysis.json ``runs``: how many points, which ones each equilibrium check removed, and why."""
    run_conv = runs.set_index("run_id")["converged"].astype(bool) if "run_id" in runs else pd.Series(dtype=bool)
    unconverged = runs[~runs["converged"].astype(bool)] if "converged" in runs else runs.iloc[:0]
    drift, first = run_max_drift(lat), lat.groupby("run_id")[["T", "seed", "converged"]].first()
    order = sorted(all_ids, key=lambda r: (first.at[r, "seed"], -first.at[r, "T"]))
    drifting = [{"T": float(first.at[r, "T"]), "seed": int(first.at[r, "seed"]), "max_m2_drift": float(drift[r])}
                for r in order if bool(first.at[r, "converged"]) and drift.get(r, np.nan) > max_drift]

    def failed(flags: pd.Series) -> list[dict[str, float | int]]:
        """The points (in ``order``) whose check flag is 0.0: failed, not merely unchecked (NaN)."""
        return [{"T": float(first.at[r, "T"]), "seed": int(first.at[r, "seed"])} for r in order
                if flags.get(r, np.nan) == 0.0]

    unstable = failed(stability_flags(runs))
    sides = side_flags(runs)  # None: never compared with its other side
    return {
        "total": int(len(run_conv)) if len(run_conv) else int(len(all_ids)),
        "converged": int(run_conv.sum()) if len(run_conv) else int(len(conv)),
        "unconverged": int((~run_conv).sum()) if len(run_conv) else 0,
        "unconverged_points": [{"T": float(r["T"]), "seed": int(r["seed"])} for _, r in unconverged.iterrows()],
        "max_m2_drift": max_drift,
        "drifting": len(drifting),
        "drifting_points": drifting,
        "unstable": len(unstable),
        "unstable_points": unstable,
        "removed_by": eq_counts["removed"],
        "stability_checked": eq_counts["stability_checked"],
        "stability_not_checked": eq_counts["stability_not_checked"],
        # a scan compared with its other side (issue 19): equilibrium points the other side lacked
        **({"sides_not_compared": eq_counts["sides_not_compared"]} if "sides_not_compared" in eq_counts else {}),
        # and the points where the sides disagree or the cold side is not at equilibrium (start_check.mark_sides)
        **({"sides_failed_points": failed(sides)} if sides is not None else {}),
        "equilibrium": len(conv) if not fallback else 0,
        "fits_use": eq_counts["rule"],
        "fits_use_unconverged": bool(fallback),
    }


def _thresholds_section(pooled: pd.DataFrame, head: dict, cfg: Mapping[str, Any], thr_split: str,
                        fitted_rows: pd.DataFrame) -> dict[str, Any]:
    """analysis.json's per-rank spectrum (thresholds, utilities, best D~_K) and how the thresholds were fitted."""
    return {
        "T_c": pooled["T_c"].tolist(),
        "T_c_fit": pooled["T_c_fit"].tolist(),
        "threshold_status": pooled["threshold_status"].tolist(),
        "thresholds_resolved": {
            "n_resolved": head["n_resolved"], "n_unresolved": head["n_unresolved"],
            "unresolved_ranks": head["unresolved_ranks"],
            "rule": f"resolved: >= {MIN_WINDOW_POINTS} points in the rate-fit window, >= {MIN_ACTIVE_POINTS} active "
                    "(M^2 > active_threshold) and >= 1 collapsed; unresolved thresholds are kept out of R^2 and "
                    "agreement",
        },
        "dD": pooled["dD"].tolist(),
        "best_D": pooled["best_D"].tolist(),
        "best_D0": head["best_D0"],
        "threshold_fit": {
            "model": "R_k(T) = [-1/2 log(T/T_c,k)]_+ (slope fixed), least squares in log T_c,k",
            "split": thr_split,
            "window_T_over_dD": list(cfg["rate_window"]),
            "window_T_over_dD_used": list(fit_window(cfg["rate_window"])),
            "n_points": pooled["n_fit"].tolist(),
            "n_points_active": pooled["n_fit_active"].tolist(),
            "n_points_collapsed": pooled["n_fit_collapsed"].tolist(),
            "reported_when": "the rank is active (M^2 > active_threshold) at some scan point used, T_c lies "
                             "inside scan_T_range and the threshold is resolved; otherwise T_c is null and "
                             "threshold_status says why (T_c_fit keeps the fitted number)",
            "scan_T_range": list(_scan_range(fitted_rows)),
        },
    }


AGREEMENT_KEYS = ("identity_r2", "identity_r2_ci95", "identity_r2_ranks", "identity_r2_head", "identity_r2_head_ranks",
                  "identity_r2_tail", "identity_r2_tail_ranks", "rank_agreement", "rank_agreement_ranks",
                  "kendall_tau", "rank_inversions", "kendall_tau_ranks", "ablation_order")


def _agreement_section(head: dict) -> dict[str, Any]:
    """Identity R^2 (whole, head, tail), rank agreement, Kendall's tau and the ablation order."""
    return {**{key: head[key] for key in AGREEMENT_KEYS}, "head_ranks": HEAD_RANKS}


def _meanfield_section(head: dict, thr_split: str) -> dict[str, Any]:
    return {**head["meanfield"], "split": thr_split,
            "thresholds": f"rate-fit T_c,k of the {thr_split} split (resolved ranks), M^2 of the same split",
            "fit": "log M_k^2 = a_k + b log(1 - T/T_c,k): common slope b, one intercept a_k per rank "
                   "(fixed effects), equilibrium points with M^2 > active_threshold, ranks with >= "
                   f"{MIN_MEANFIELD_POINTS} points; stderr = max(OLS, bootstrap over ranks), ci95 from the "
                   "bootstrap"}


def _truncation_section(head: dict, cfg: Mapping[str, Any], pca_curve: np.ndarray, pca_held: np.ndarray,
                        pca_held_source: str, d_pca: dict, d_pca_held: dict) -> dict[str, Any]:
    """The power law of best D~_K, PCA's curve on the held-out split, and d_eff of the model and of PCA."""
    eps = cfg["d_eff_eps"]
    return {
        "powerlaw": {**head["powerlaw"],
                     "pca_configured_window": powerlaw_fit(np.arange(len(pca_curve)), pca_curve,
                                                           tuple(cfg["powerlaw_ranks"]))},
        "pca_heldout": {"split": EVAL_SPLIT, "eigenvectors": "train", "source": pca_held_source,
                        "D_K": pca_held.tolist(), "d_eff": [d_pca_held[float(e)] for e in eps]},
        "d_eff": {"eps": [float(e) for e in eps], "model": [head["d_eff"][float(e)] for e in eps],
                  "pca": [d_pca[float(e)] for e in eps], "pca_heldout": [d_pca_held[float(e)] for e in eps]},
    }


def _linear_section(pooled: pd.DataFrame, head: dict, thr_split: str) -> dict[str, Any]:
    """The linear family's check against the exact law: thresholds against PCA's lambda_k / V."""
    return {"T_c_m2": pooled["T_c_m2"].tolist(),
            "pca_relative_error": pooled["rel_err_pca"].tolist(),
            "pca_relative_error_top5_max": head["pca_relative_error_top5_max"],
            "pca_relative_error_m2_top5_max": head["pca_relative_error_m2_top5_max"],
            "pca_check": _pca_check(pooled, head, thr_split)}


def _seed_spread(family: str, per: Mapping[int, dict], head: dict, spectra_df: pd.DataFrame,
                 eps) -> dict[str, Any]:
    """Every headline scalar per seed and pooled, with its spread; per-rank spread of T_c and dD~."""
    scalars = _scalars(family)
    spread = {name: {**_spread([f(h) for h in per.values()]), "per_seed": {s: f(h) for s, h in per.items()},
                     "pooled": f(head)} for name, f in scalars.items()}
    per_seed = spectra_df[spectra_df["seed"] != POOLED]
    if len(per_seed):
        for col in ("T_c", "dD"):
            g = per_seed.groupby("k")[col]
            spread[col] = {"mean": g.mean().tolist(), "std": g.std(ddof=1).tolist(),
                           "min": g.min().tolist(), "max": g.max().tolist()}
    for e in eps:
        spread[f"d_eff_{float(e):g}"] = {**_spread([h["d_eff"][float(e)] for h in per.values()]),
                                         "per_seed": {s: h["d_eff"][float(e)] for s, h in per.items()},
                                         "pooled": head["d_eff"][float(e)]}
    return spread


def _drift_sensitivity(lat: pd.DataFrame, runs: pd.DataFrame, conv: set, results: dict, fit_seed_sets,
                       seeds: list[int], family: str) -> dict[str, Any]:
    """The headline numbers at other drift limits (issue 17, item 4): how much a claim rests on the limit."""
    scalars = _scalars(family)
    sens = {}
    for limit in DRIFT_LIMITS:
        ids, rep = equilibrium(lat, runs, limit)
        if not ids:
            sens[f"{limit:g}"] = {"equilibrium": 0}
            continue
        # the same points as the headline fits (e.g. no drift between the limits): the same numbers, not refitted
        res = {seed: h for seed, (_, h) in (results if ids == conv else fit_seed_sets(ids)).items()}
        per_l = {s: h for s, h in res.items() if s != POOLED} or {seeds[0]: res[POOLED]}
        sens[f"{limit:g}"] = {"equilibrium": len(ids), "removed_by": rep["removed"],
                              **{name: {"pooled": f(res[POOLED]), "per_seed": {s: f(h) for s, h in per_l.items()}}
                                 for name, f in scalars.items()}}
    return sens


def _tables(results: dict, model_id: str, lam: np.ndarray, pca_held, eps) -> dict[str, Any]:
    """spectra.parquet and d_eff.parquet (per seed, seed -1 pooled; d_eff also of PCA, train and test), and the
    PCA curves and d_eff they were drawn with."""
    spectra, d_rows = [], []
    for seed, (spec, head) in results.items():  # one seed: its rows are the pooled rows
        spec = spec.copy()
        spec.insert(0, "seed", seed)
        spectra.append(spec)
        d_rows += [{"source": model_id, "seed": seed, "eps": e, "d_eff": v} for e, v in head["d_eff"].items()]
    pca_curve = pca_distortion(lam)
    d_pca = d_eff(pca_curve, eps)
    d_pca_held = d_eff(pca_held, eps)
    d_rows += [{"source": "pca", "seed": POOLED, "eps": e, "d_eff": v} for e, v in d_pca.items()]
    d_rows += [{"source": "pca_test", "seed": POOLED, "eps": e, "d_eff": v} for e, v in d_pca_held.items()]
    return {"spectra": pd.concat(spectra, ignore_index=True),
            "d_eff": pd.DataFrame(d_rows).astype({"seed": int, "eps": float, "d_eff": float}),
            "pca_curve": pca_curve, "d_pca": d_pca, "d_pca_held": d_pca_held}


def _model_section(model_id: str, family: str, depth: int, lat: pd.DataFrame, runs: pd.DataFrame, seeds: list[int],
                   cfg: Mapping[str, Any]) -> dict[str, Any]:
    """analysis.json's head: which model, its seeds, the T grid it was scanned on, the active threshold."""
    T_grid = sorted({float(t) for t in runs["T"]}, reverse=True) if "T" in runs else sorted(
        {float(t) for t in lat["T"]}, reverse=True)
    return {"model": model_id, "family": family, "depth": depth, "split": EVAL_SPLIT,
            "n_latents": int(lat["latent"].nunique()) if "latent" in lat else int(lat["rank"].max()),
            "seeds": seeds, "T_grid": T_grid, "active_threshold": float(cfg["active_threshold"])}


def _ranks_section(pooled: pd.DataFrame, pca: pd.DataFrame) -> dict[str, Any]:
    """analysis.json's ranks, their PCA thresholds lambda_k/V and held-out weighting shifts a_k."""
    pca = pca.sort_values("k")
    return {"rank": pooled["k"].tolist(), "lambda_over_V": pooled["lambda_over_V"].tolist(),
            "a_test": _by_rank(pca["a_test"].to_numpy(float), pooled["k"]),
            "a_validation": _by_rank(pca["a_validation"].to_numpy(float), pooled["k"])}


def analyse_model(latents: pd.DataFrame, pruning: pd.DataFrame, runs: pd.DataFrame, pca: pd.DataFrame,
                  cfg: Mapping[str, Any], model_id: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """spectra table, d_eff table and the analysis (analysis.json) of one model (see module docstring): the fits on
    the points at equilibrium, per seed and pooled, then one builder per section of analysis.json."""
    lat = eval_split(latents)
    prn = eval_split(pruning)
    thr_split, thr_note = threshold_split(latents)
    lat_thr = latents[latents["split"] == thr_split] if "split" in latents else lat
    family = str(lat["family"].iloc[0]) if "family" in lat else ("linear" if model_id == "linear" else "mlp")
    depth = int(lat["depth"].iloc[0]) if "depth" in lat else 0
    lam = pca.sort_values("k")["lambda_over_V"].to_numpy(float)
    pca_held, pca_held_source = pca_heldout_distortion(pca, EVAL_SPLIT)

    max_drift = float(cfg["max_m2_drift"])
    conv, eq_counts, fallback = fit_points(lat, runs, max_drift)  # every fit uses these scan points only
    all_ids = set(lat["run_id"].unique())
    if fallback:
        warnings.warn(f"{model_id}: no scan point reached equilibrium; fitting on all points (flagged in "
                      "analysis.json's runs.fits_use_unconverged)")
    seeds = sorted(int(s) for s in lat["seed"].unique())

    def fit_seed_sets(ids: set) -> dict[int, tuple[pd.DataFrame, dict]]:
        return {seed: _one_seed_set(lat, lat_thr, prn, g, family, lam, cfg, pca_held)
                for seed, g in _seed_sets(lat, ids, seeds if len(seeds) > 1 else []) if g}

    results = fit_seed_sets(conv)
    heads = {seed: head for seed, (_, head) in results.items()}
    eps = cfg["d_eff_eps"]
    tables = _tables(results, model_id, lam, pca_held, eps)
    spectra_df = tables["spectra"]
    pooled = spectra_df[spectra_df["seed"] == POOLED]
    head = heads[POOLED]
    per = {s: h for s, h in heads.items() if s != POOLED} or {seeds[0]: head}
    analysis: dict[str, Any] = {  # written with sorted keys (provenance.write_json): the order here is free
        **_model_section(model_id, family, depth, lat, runs, seeds, cfg),
        "splits": _splits_section(thr_split, thr_note),
        "runs": _runs_section(lat, runs, all_ids, conv, eq_counts, max_drift, fallback),
        **_ranks_section(pooled, pca),
        **_thresholds_section(pooled, head, cfg, thr_split, lat[lat["run_id"].isin(conv)]),
        **_agreement_section(head),
        "meanfield": _meanfield_section(head, thr_split),
        **_truncation_section(head, cfg, tables["pca_curve"], pca_held, pca_held_source, tables["d_pca"],
                              tables["d_pca_held"]),
    }
    if family == "linear":
        analysis.update(_linear_section(pooled, head, thr_split))
    analysis["seed_spread"] = _seed_spread(family, per, head, spectra_df, eps)
    analysis["claims"] = _claims(per, head)
    analysis["drift_sensitivity"] = _drift_sensitivity(lat, runs, conv, results, fit_seed_sets, seeds, family)
    return spectra_df, tables["d_eff"], _clean(analysis)
