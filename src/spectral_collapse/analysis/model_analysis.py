"""Everything the study reports for one model, per seed and pooled over seeds, and the combined summary.

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

from .agreement import leading_ranks, log_identity_r2, rank_agreement, rank_concordance, relative_error
from .d_eff import d_eff, pca_distortion, powerlaw_crossover, powerlaw_fit
from .spectrum import equilibrium_run_ids, eval_split, run_max_drift, utility_spectrum
from .thresholds import fit_m2_threshold, fit_rate_threshold, in_scan, meanfield_exponent, threshold_status

POOLED = -1
TOP_RANKS = 5  # ranks over which the linear family's threshold error against PCA is summarised


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
    """Per rank of `spec`: T_c (NaN unless `threshold_status` is "fitted"), T_c_m2 (linear family, under the
    same conditions: active somewhere, inside the scan), n_fit (points in the rate window), threshold_status."""
    T_range = _scan_range(fit_rows)
    active = set(fit_rows.loc[fit_rows["M2"] > cfg["active_threshold"], "rank"].tolist())
    by_rank = {k: g for k, g in fit_rows.groupby("rank")}
    rows = []
    for k, dD in zip(spec["k"], spec["dD"]):
        g = by_rank.get(k, fit_rows.iloc[:0])
        T, R, M2 = (g[c].to_numpy(float) for c in ("T", "rate", "M2"))
        tc, n = fit_rate_threshold(T, R, dD, cfg["rate_window"])
        status = threshold_status(tc, dD, k in active, T_range)
        tc = tc if status == "fitted" else np.nan
        tc_m2 = np.nan
        if family == "linear" and k in active:
            tc_m2 = fit_m2_threshold(T, M2, tc if np.isfinite(tc) else dD)[0]
            tc_m2 = tc_m2 if in_scan(tc_m2, T_range) else np.nan
        rows.append({"T_c": tc, "T_c_m2": tc_m2, "n_fit": n, "threshold_status": status})
    return pd.DataFrame(rows, index=spec.index).astype({"n_fit": int})


def _meanfield(fit_rows: pd.DataFrame, T_c: Mapping[int, float], cfg: Mapping[str, Any]) -> dict:
    """The mean-field exponent over the settled points of every rank with a threshold.

    The mean-field law is a law of equilibrium M^2: points whose M^2 was still moving at the end of
    training (critical slowing down next to a threshold, even in a run that met its loss tolerance) are
    left out of the exponent fit.
    """
    max_drift = float(cfg["max_m2_drift"])
    drift = fit_rows["m2_drift"].to_numpy(float) if "m2_drift" in fit_rows else np.zeros(len(fit_rows))
    settled = ~(drift > max_drift)  # NaN drift counts as settled
    rows = fit_rows[settled]
    mf = meanfield_exponent(rows["T"].to_numpy(float), rows["M2"].to_numpy(float),
                            rows["rank"].map(T_c).to_numpy(float), group=rows["rank"].to_numpy(),
                            window=tuple(cfg["meanfield_window"]))
    return {**mf, "max_m2_drift": max_drift, "n_drifting_excluded": int((~settled).sum())}


def _one_group(lat: pd.DataFrame, prn: pd.DataFrame, run_ids: set, family: str, lam: np.ndarray,
               cfg: Mapping[str, Any]) -> tuple[pd.DataFrame, dict]:
    """Spectrum, thresholds and headline numbers of one set of scan points (one seed, or pooled)."""
    spec = utility_spectrum(prn, run_ids)
    fit_rows = lat[lat["run_id"].isin(run_ids)]
    spec = pd.concat([spec, _thresholds(fit_rows, spec, family, cfg)], axis=1)
    spec["lambda_over_V"] = _by_rank(lam, spec["k"])
    spec["rel_err_pca"] = relative_error(spec["T_c"], spec["lambda_over_V"]) if family == "linear" else np.nan

    T_c = spec["T_c"].to_numpy(float)
    dD = spec["dD"].to_numpy(float)
    usable = np.isfinite(T_c) & (T_c > 0) & np.isfinite(dD) & (dD > 0)
    best = np.concatenate([[_best_D0(prn, run_ids)], spec["best_D"].to_numpy(float)])
    # The model's curve flattens past the last rank ever active in the scan (a floor set by the coldest T):
    # fit only up to the last rank with a threshold, and PCA over the same ranks (like with like).
    resolved = spec["k"].to_numpy()[usable]
    first, last = cfg["powerlaw_ranks"]
    last = min(last, int(resolved.max()) if len(resolved) else 0)
    model_fit = powerlaw_fit(np.arange(len(best)), best, (first, last))
    pca_curve = pca_distortion(lam)
    concordance = rank_concordance(T_c, dD)
    headline = {
        "identity_r2": log_identity_r2(T_c[usable], dD[usable]),
        "identity_r2_ranks": int(usable.sum()),
        "rank_agreement": rank_agreement(T_c, dD),
        "rank_agreement_ranks": leading_ranks(T_c, dD),
        "kendall_tau": concordance["kendall_tau"],
        "rank_inversions": concordance["inversions"],
        "kendall_tau_ranks": concordance["n_ranks"],
        "meanfield": _meanfield(fit_rows, dict(zip(spec["k"], T_c)), cfg),
        "powerlaw": {"model": model_fit,
                     "pca": powerlaw_fit(np.arange(len(pca_curve)), pca_curve, tuple(model_fit["ranks"])),
                     # head/tail crossover (paper: near K = 4), over the ranks the model resolves
                     "crossover": powerlaw_crossover(np.arange(len(best)), best, max(last, 5)),
                     "pca_crossover": powerlaw_crossover(np.arange(len(pca_curve)), pca_curve, max(last, 5))},
        "d_eff": d_eff(best, cfg["d_eff_eps"]),
        "best_D0": float(best[0]),
    }
    if family == "linear":
        err = spec["rel_err_pca"].to_numpy(float)[:TOP_RANKS]
        headline["pca_relative_error_top5_max"] = float(np.nanmax(err)) if np.isfinite(err).any() else np.nan
        err_m2 = relative_error(spec["T_c_m2"], spec["lambda_over_V"])[:TOP_RANKS]
        headline["pca_relative_error_m2_top5_max"] = (
            float(np.nanmax(err_m2)) if np.isfinite(err_m2).any() else np.nan)
    return spec, headline


def _pca_check(latents, pruning, conv, lam, cfg, pooled, head) -> dict:
    """Linear family: thresholds against lambda_k / V on the data the PCA was computed from.

    The PCA is of the training sample, and the held-out spatial blocks have a different covariance (their
    variance along PC k is a_k lambda_k, a_k = the PCA table's `a_test`, off 1 by tens of percent), which
    shifts the rate curves measured on the test split by 1/2 (a_k - 1) nats. When the run tables hold a
    `train` split the comparison uses it;
    otherwise it falls back to the test-split numbers (and says so).
    """
    if "split" in latents and (latents["split"] == "train").any() and (pruning["split"] == "train").any():
        lat_tr = latents[latents["split"] == "train"]
        prn_tr = pruning[pruning["split"] == "train"]
        spec, h = _one_group(lat_tr, prn_tr, conv & set(lat_tr["run_id"]), "linear", lam, cfg)
        split = "train"
    else:
        spec, h = pooled, head
        split = "test"
    return {"split": split, "T_c": spec["T_c"].tolist(), "T_c_m2": spec["T_c_m2"].tolist(),
            "relative_error": spec["rel_err_pca"].tolist(),
            "relative_error_top5_max": h["pca_relative_error_top5_max"],
            "relative_error_m2_top5_max": h["pca_relative_error_m2_top5_max"],
            "meanfield_exponent": h["meanfield"]["exponent"], "meanfield_stderr": h["meanfield"]["stderr"]}


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


def analyse_model(latents: pd.DataFrame, pruning: pd.DataFrame, runs: pd.DataFrame, pca: pd.DataFrame,
                  cfg: Mapping[str, Any], model_id: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """spectra table, d_eff table and the summary dict of one model (see module docstring)."""
    lat = eval_split(latents)
    prn = eval_split(pruning)
    family = str(lat["family"].iloc[0]) if "family" in lat else ("linear" if model_id == "linear" else "mlp")
    depth = int(lat["depth"].iloc[0]) if "depth" in lat else 0
    lam = pca.sort_values("k")["lambda_over_V"].to_numpy(float)

    max_drift = float(cfg["max_m2_drift"])
    conv = equilibrium_run_ids(lat, max_drift)  # every fit uses these scan points only
    all_ids = set(lat["run_id"].unique())
    fallback = not conv
    if fallback:
        warnings.warn(f"{model_id}: no scan point reached equilibrium; fitting on all points (flagged in the summary)")
        conv = all_ids
    seeds = sorted(int(s) for s in lat["seed"].unique())
    groups = [(POOLED, conv)]
    if len(seeds) > 1:
        seed_of = lat.groupby("run_id")["seed"].first()
        groups += [(s, {r for r in conv if int(seed_of[r]) == s}) for s in seeds]

    spectra, d_rows, heads = [], [], {}
    for seed, ids in groups:
        if not ids:
            continue
        spec, head = _one_group(lat, prn, ids, family, lam, cfg)
        spec.insert(0, "seed", seed)
        spectra.append(spec)
        heads[seed] = head
        d_rows += [{"source": model_id, "seed": seed, "eps": e, "d_eff": v} for e, v in head["d_eff"].items()]
    eps = cfg["d_eff_eps"]
    pca_curve = pca_distortion(lam)
    d_pca = d_eff(pca_curve, eps)
    d_rows += [{"source": "pca", "seed": POOLED, "eps": e, "d_eff": v} for e, v in d_pca.items()]
    spectra_df = pd.concat(spectra, ignore_index=True)
    d_eff_df = pd.DataFrame(d_rows).astype({"seed": int, "eps": float, "d_eff": float})

    pooled = spectra_df[spectra_df["seed"] == POOLED]
    head = heads[POOLED]
    run_conv = runs.set_index("run_id")["converged"].astype(bool) if "run_id" in runs else pd.Series(dtype=bool)
    T_grid = sorted({float(t) for t in runs["T"]}, reverse=True) if "T" in runs else sorted(
        {float(t) for t in lat["T"]}, reverse=True)
    unconverged = runs[~runs["converged"].astype(bool)] if "converged" in runs else runs.iloc[:0]
    drift, first = run_max_drift(lat), lat.groupby("run_id")[["T", "seed", "converged"]].first()
    drifting = [{"T": float(first.at[r, "T"]), "seed": int(first.at[r, "seed"]), "max_m2_drift": float(drift[r])}
                for r in sorted(all_ids, key=lambda r: (first.at[r, "seed"], -first.at[r, "T"]))
                if bool(first.at[r, "converged"]) and drift.get(r, np.nan) > max_drift]
    pca = pca.sort_values("k")
    summary: dict[str, Any] = {
        "model": model_id,
        "family": family,
        "depth": depth,
        "split": "test",
        "n_latents": int(lat["latent"].nunique()) if "latent" in lat else int(lat["rank"].max()),
        "seeds": seeds,
        "T_grid": T_grid,
        "active_threshold": float(cfg["active_threshold"]),
        "runs": {
            "total": int(len(run_conv)) if len(run_conv) else int(len(all_ids)),
            "converged": int(run_conv.sum()) if len(run_conv) else int(len(conv)),
            "unconverged": int((~run_conv).sum()) if len(run_conv) else 0,
            "unconverged_points": [{"T": float(r["T"]), "seed": int(r["seed"])} for _, r in unconverged.iterrows()],
            "max_m2_drift": max_drift,
            "drifting": len(drifting),
            "drifting_points": drifting,
            "equilibrium": len(conv) if not fallback else 0,
            "fits_use": "converged runs whose M^2 settled (max m2_drift <= max_m2_drift)",
            "fits_use_unconverged": bool(fallback),
        },
        "rank": pooled["k"].tolist(),
        "lambda_over_V": pooled["lambda_over_V"].tolist(),
        "a_test": _by_rank(pca["a_test"].to_numpy(float), pooled["k"]),
        "a_validation": _by_rank(pca["a_validation"].to_numpy(float), pooled["k"]),
        "T_c": pooled["T_c"].tolist(),
        "threshold_status": pooled["threshold_status"].tolist(),
        "dD": pooled["dD"].tolist(),
        "best_D": pooled["best_D"].tolist(),
        "best_D0": head["best_D0"],
        "threshold_fit": {
            "model": "R_k(T) = [-1/2 log(T/T_c,k)]_+ (slope fixed), least squares in log T_c,k",
            "window_T_over_dD": list(cfg["rate_window"]),
            "n_points": pooled["n_fit"].tolist(),
            "reported_when": "the rank is active (M^2 > active_threshold) at some scan point used and T_c lies "
                             "inside scan_T_range; otherwise T_c is null and threshold_status says why",
            "scan_T_range": list(_scan_range(lat[lat["run_id"].isin(conv)])),
        },
        "identity_r2": head["identity_r2"],
        "identity_r2_ranks": head["identity_r2_ranks"],
        "rank_agreement": head["rank_agreement"],
        "rank_agreement_ranks": head["rank_agreement_ranks"],
        "kendall_tau": head["kendall_tau"],
        "rank_inversions": head["rank_inversions"],
        "kendall_tau_ranks": head["kendall_tau_ranks"],
        "meanfield": {**head["meanfield"], "thresholds": "rate fit T_c,k (ranks with a reported threshold)",
                      "fit": "log M_k^2 = a_k + b log(1 - T/T_c,k): common slope b, one intercept a_k per rank "
                             "(fixed effects); stderr = max(OLS, bootstrap over ranks)"},
        "powerlaw": {**head["powerlaw"],
                     "pca_configured_window": powerlaw_fit(np.arange(len(pca_curve)), pca_curve,
                                                           tuple(cfg["powerlaw_ranks"]))},
        "d_eff": {"eps": [float(e) for e in eps], "model": [head["d_eff"][float(e)] for e in eps],
                  "pca": [d_pca[float(e)] for e in eps]},
    }
    if family == "linear":
        summary["T_c_m2"] = pooled["T_c_m2"].tolist()
        summary["pca_relative_error"] = pooled["rel_err_pca"].tolist()
        summary["pca_relative_error_top5_max"] = head["pca_relative_error_top5_max"]
        summary["pca_relative_error_m2_top5_max"] = head["pca_relative_error_m2_top5_max"]
    if family == "linear":
        summary["pca_check"] = _pca_check(latents, pruning, conv, lam, cfg, pooled, head)
    if len(heads) > 2:  # pooled + at least two seeds
        per = {s: h for s, h in heads.items() if s != POOLED}
        scalars = {
            "identity_r2": lambda h: h["identity_r2"],
            "rank_agreement": lambda h: h["rank_agreement"],
            "kendall_tau": lambda h: h["kendall_tau"],
            "rank_inversions": lambda h: h["rank_inversions"],
            "meanfield_exponent": lambda h: h["meanfield"]["exponent"],
            "powerlaw_exponent": lambda h: h["powerlaw"]["model"]["exponent"],
        }
        if family == "linear":
            scalars["pca_relative_error_top5_max"] = lambda h: h["pca_relative_error_top5_max"]
        spread = {name: {**_spread([f(h) for h in per.values()]), "per_seed": {s: f(h) for s, h in per.items()}}
                  for name, f in scalars.items()}
        per_seed = spectra_df[spectra_df["seed"] != POOLED]
        for col in ("T_c", "dD"):
            g = per_seed.groupby("k")[col]
            spread[col] = {"mean": g.mean().tolist(), "std": g.std(ddof=1).tolist(),
                           "min": g.min().tolist(), "max": g.max().tolist()}
        for e in eps:
            spread[f"d_eff_{float(e):g}"] = _spread([h["d_eff"][float(e)] for h in per.values()])
        summary["seed_spread"] = spread
    return spectra_df, d_eff_df, _clean(summary)
