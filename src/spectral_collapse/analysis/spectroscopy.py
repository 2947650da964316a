"""Latent spectroscopy (issue 20): which input variables each active latent carries, and how many dimensions the
model, PCA and a VIF step keep. For species-distribution modellers who fight collinearity among predictors.

- ``latent_variables``: for every active latent of every scan point at equilibrium, the weighted Pearson r of its
  posterior mean mu_k(x) with each input variable, on the evaluation (test) split with its row weights: the split
  M^2 and D~_K are measured on. r is invariant to the store's standardization, so r with the standardized inputs
  is r with the raw ones.
- ``collinearity``: the usdm ``vifstep`` procedure and the number of PCA components that hold a share of the
  variance, both on the training split (its rows weigh 1: it is already a weighted draw).
- ``model_spectroscopy`` / ``spectroscopy_table`` / ``spectroscopy_json``: per model and tolerance eps, the
  model's d_eff with the latents of the run that reaches it, PCA's d_eff, the PCA share and the VIF step.

Nothing here knows the data source: the variable names come from the store's ``variable`` coordinate.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .d_eff import d_eff, pca_distortion
from .equilibrium import fit_points as equilibrium_fit_points
from .maps import carried_variables, correlation_rows, variable_table
from .model_analysis import _clean
from .spectrum import EVAL_SPLIT, eval_split

TRAIN_SPLIT = "train"
SHARE_ROUNDING = 1e-12  # slack on 1 - share: a cumulative share equal to it in exact arithmetic counts as reached
LATENT_VARIABLE_COLUMNS = ("model", "run_id", "T", "seed", "latent", "rank", "M2", "variable", "long_name", "units",
                           "r", "at_equilibrium", "model_file", "member")
VIF_PROCEDURE = ("usdm vifstep: compute every variable's VIF, drop the variable with the largest VIF while that VIF "
                 ">= threshold, recompute, stop when every VIF < threshold. VIF_j = 1 / (1 - R_j^2) of the "
                 "least-squares regression of variable j on the other kept variables with an intercept: "
                 "statsmodels.stats.outliers_influence.variance_inflation_factor on the kept columns with a "
                 "constant column added (the constant's own VIF skipped); R^2 is clipped at 1 - 1e-15 by statsmodels, "
                 "so an exactly collinear variable has VIF ~ 1e15")


# --------------------------------------------------------------------------- collinearity (training split)


def vif_values(x: np.ndarray) -> np.ndarray:
    """VIF of every column of x (n, m): 1/(1 - R^2) of its regression on the other columns with an intercept."""
    import statsmodels.api as sm
    from statsmodels.stats.outliers_influence import variance_inflation_factor

    exog = sm.add_constant(np.asarray(x, dtype=np.float64), has_constant="add")
    with warnings.catch_warnings():  # collinear inputs are what is being measured, not a numerical accident
        warnings.filterwarnings("ignore", message="The design matrix is poorly conditioned")
        warnings.filterwarnings("ignore", message="The design matrix is rank-deficient")
        return np.array([variance_inflation_factor(exog, i) for i in range(1, exog.shape[1])], dtype=float)


def vif_step(x: np.ndarray, names: Sequence[str], threshold: float) -> dict[str, Any]:
    """The usdm ``vifstep`` selection, so that the model's d_eff can be set beside what a modeller would keep:
    drop the variable with the largest VIF until every VIF is below ``threshold``. ``kept`` in input order,
    ``dropped`` in drop order with the VIF it had when dropped, ``vif`` the final VIF of every kept variable."""
    import statsmodels

    x = np.asarray(x, dtype=np.float64)
    names = [str(n) for n in names]
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"x has shape {x.shape}, but {len(names)} variable names were given")
    kept = list(range(len(names)))
    dropped: list[dict[str, Any]] = []
    vif = vif_values(x[:, kept])
    while len(kept) > 1 and np.isfinite(vif).any() and np.nanmax(vif) >= float(threshold):
        worst = int(np.nanargmax(vif))
        dropped.append({"variable": names[kept[worst]], "vif": float(vif[worst])})
        del kept[worst]
        vif = vif_values(x[:, kept])
    return {"threshold": float(threshold), "kept": [names[i] for i in kept], "dropped": dropped,
            "vif": {names[i]: float(v) for i, v in zip(kept, vif)}, "n_rows": int(len(x)),
            "n_variables": len(names), "library": f"statsmodels {statsmodels.__version__}",
            "procedure": VIF_PROCEDURE}


def components_for_share(lambda_over_V: Iterable[float], share: float) -> int:
    """The number of leading PCA components that hold ``share`` of the variance: the PCA-selection answer to
    "how many axes do I keep", to set beside d_eff (the smallest K whose left-out variance is <= 1 - share)."""
    lam = np.asarray(list(lambda_over_V), dtype=float)
    eps = 1.0 - float(share) + SHARE_ROUNDING
    return int(d_eff(pca_distortion(lam / lam.sum()), [eps])[eps])


def variable_info(store_path: str | Path) -> pd.DataFrame:
    """variable, long_name, units of the store's inputs, in store order (``maps.variable_table``)."""
    from spectral_collapse.store import open_store

    with open_store(store_path) as ds:
        return variable_table(ds)


def collinearity(store_path: str | Path, pca: pd.DataFrame, threshold: float, share: float) -> dict[str, Any]:
    """collinearity.json: the VIF step on the training sample and the PCA components for ``share`` of its
    variance (from the PCA table, itself of the training sample)."""
    from spectral_collapse.store import load_split

    names = variable_info(store_path)["variable"].tolist()
    lam = pca.sort_values("k")["lambda_over_V"].to_numpy(float)
    held = np.cumsum(np.sort(lam)[::-1]) / lam.sum()
    return {
        "split": TRAIN_SPLIT,
        "weights": "training rows weigh 1 (the training sample is already a weighted draw)",
        "variables": names,
        "vif_step": vif_step(load_split(store_path, TRAIN_SPLIT), names, threshold),
        "pca_share": {"share": float(share), "components": components_for_share(lam, share),
                      "cumulative_share": held.tolist(),
                      "computed": "the smallest K whose leading K eigenvalues of the training sample's covariance "
                                  "(PCA table, lambda_k / V) hold >= share of the total variance"},
    }


# --------------------------------------------------------------------------- latent variables (test split)


def fit_points(latents: pd.DataFrame, runs: pd.DataFrame, max_drift: float) -> tuple[set, bool]:
    """(run_ids, at_equilibrium): the scan points analyse_model fits on (``equilibrium.fit_points``), on the
    evaluation split."""
    ids, _, fallback = equilibrium_fit_points(eval_split(latents), runs, max_drift)
    return ids, not fallback


def _as_list(value: Any, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value] * n


def members_of(meta: Mapping[str, Any], points: Mapping[tuple[float, int], str], path: str | Path = "") -> list:
    """The run_id of each member of a model.pt (None where the scan tables hold no such point): its T and seed as
    the scan tables store them (the member's own T: the scan point, or T_eff with a learned decoder variance;
    not T_grid). A model.pt that also names its members' run_ids must agree."""
    Ts = _as_list(meta["T"], 1)
    seeds = _as_list(meta["seed"], len(Ts))
    ids = [points.get((float(T), int(s))) for T, s in zip(Ts, seeds)]
    stored = meta.get("run_id")
    if stored is not None:
        for rid, own in zip(ids, _as_list(stored, len(Ts))):
            if rid is not None and rid != own:
                raise ValueError(f"{path}: member {own} matches scan point {rid} by (T, seed)")
    return ids


def latent_variables(store_path: str | Path, model_paths: Sequence[str | Path], latents: pd.DataFrame,
                     runs: pd.DataFrame, max_drift: float) -> pd.DataFrame:
    """One row per (run_id, active latent, variable) of the scan points at equilibrium: r of mu_k(x) with the
    variable on the test split, weighted by its row weights. Active: the test split's flag in scan_latents."""
    from spectral_collapse.store import load_split, load_weights
    from spectral_collapse.vae import encode_array, load_trained

    lat = eval_split(latents)
    ids, at_eq = fit_points(lat, runs, max_drift)
    active = lat[lat["run_id"].isin(ids) & lat["active"].astype(bool)]
    keep = ["model", "run_id", "T", "seed", "latent", "rank", "M2"]
    points = {(float(T), int(s)): rid for rid, T, s in lat[["run_id", "T", "seed"]].drop_duplicates().itertuples(
        index=False)}
    info = variable_info(store_path)
    x, w = load_split(store_path, EVAL_SPLIT), load_weights(store_path, EVAL_SPLIT)
    frames, found = [], set()
    for path in model_paths:
        model, meta = load_trained(path)
        for member, rid in enumerate(members_of(meta, points, path)):
            rows = active[active["run_id"] == rid].sort_values("rank")[keep].reset_index(drop=True)
            if rid is None or rows.empty:
                continue
            mu, _ = encode_array(model.member(member), x)
            r = carried_variables(mu, x, w, rows["latent"].to_numpy())
            frames.append(correlation_rows(rows.assign(model_file=str(path), member=member), r, info))
            found.add(rid)
    missing = sorted(set(active["run_id"]) - found)
    if missing:
        raise ValueError(f"no model.pt member for {len(missing)} scan points at equilibrium, e.g. {missing[:3]}")
    if not frames:
        return pd.DataFrame({c: [] for c in LATENT_VARIABLE_COLUMNS})
    out = pd.concat(frames, ignore_index=True).assign(at_equilibrium=at_eq)
    return out[list(LATENT_VARIABLE_COLUMNS)]


# --------------------------------------------------------------------------- what each model's d_eff carries


def _defined(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def best_run(pruning: pd.DataFrame, ids: set, K: int) -> pd.Series | None:
    """The run (test split, among ``ids``) with the smallest D~_K at K: the one that reaches d_eff's tolerance."""
    prn = eval_split(pruning)
    rows = prn[(prn["K"] == int(K)) & prn["run_id"].isin(ids)]
    rows = rows[np.isfinite(rows["D_tilde"].to_numpy(float))]
    return None if rows.empty else rows.loc[rows["D_tilde"].idxmin()]


def latent_record(row: pd.Series, r_rows: pd.DataFrame, n_carried: int) -> dict[str, Any]:
    """One latent of a run: its index, rank, M^2, r with every variable and the ``n_carried`` it carries most."""
    r = dict(zip(r_rows["variable"].astype(str), r_rows["r"].astype(float)))
    top = sorted(r.items(), key=lambda kv: -abs(kv[1]) if math.isfinite(kv[1]) else 0.0)[: int(n_carried)]
    return {"latent": int(row["latent"]), "rank": int(row["rank"]), "M2": float(row["M2"]),
            "active": bool(row["active"]), "r": r, "carries": [{"variable": v, "r": c} for v, c in top]}


def run_latents(latents: pd.DataFrame, variables: pd.DataFrame, run_id: str, n_carried: int,
                max_rank: int | None = None) -> list[dict[str, Any]]:
    """The latents of one run in rank order (test split): those of rank <= ``max_rank``, else the active ones."""
    lat = eval_split(latents)
    rows = lat[lat["run_id"] == run_id]
    rows = rows[rows["rank"] <= max_rank] if max_rank is not None else rows[rows["active"].astype(bool)]
    var = variables[variables["run_id"] == run_id]
    return [latent_record(row, var[var["latent"] == row["latent"]], n_carried)
            for _, row in rows.sort_values("rank").iterrows()]


def _run_head(row: pd.Series | None) -> dict[str, Any]:
    if row is None:
        return {"run_id": None, "T": None, "seed": None}
    return {"run_id": str(row["run_id"]), "T": float(row["T"]), "seed": int(row["seed"])}


def model_spectroscopy(model: str, d_eff_section: Mapping[str, Sequence], latents: pd.DataFrame,
                       pruning: pd.DataFrame, runs: pd.DataFrame, variables: pd.DataFrame, max_drift: float,
                       n_carried: int) -> dict[str, Any]:
    """One model: per eps of its d_eff (analysis.json, as summary.json repeats it), the run that reaches
    D~_K <= eps at K = d_eff with the smallest D~_K and its latents of rank <= d_eff; and the coldest fit point's
    active latents."""
    ids, at_eq = fit_points(latents, runs, max_drift)
    leading = []
    for eps, k in zip(d_eff_section["eps"], d_eff_section["model"]):
        entry: dict[str, Any] = {"eps": float(eps), "d_eff": int(k) if _defined(k) else None, **_run_head(None),
                                 "D_tilde": None, "latents": []}
        run = best_run(pruning, ids, int(k)) if _defined(k) else None
        if run is not None:
            entry.update(_run_head(run), D_tilde=float(run["D_tilde"]),
                         latents=run_latents(latents, variables, str(run["run_id"]), n_carried, int(k)))
        leading.append(entry)
    lat = eval_split(latents)
    fit = lat[lat["run_id"].isin(ids)].drop_duplicates("run_id").sort_values(["T", "seed"])
    coldest = {**_run_head(fit.iloc[0] if len(fit) else None), "latents": []}
    if coldest["run_id"] is not None:
        coldest["latents"] = run_latents(latents, variables, coldest["run_id"], n_carried)
    info = variables.drop_duplicates("variable")
    return {"model": model, "at_equilibrium": at_eq, "n_points": len(ids), "d_eff": dict(d_eff_section),
            "leading": leading, "coldest": coldest,
            "variables": info[[c for c in ("variable", "long_name", "units") if c in info]].to_dict("records")}


def describe_latents(records: Sequence[Mapping[str, Any]]) -> str:
    """"z3: var_a (+0.97), var_b (-0.91); z7: ...": each latent and the variables it carries most."""
    parts = []
    for rec in records:
        carried = ", ".join(f"{c['variable']} ({c['r']:+.2f})" for c in rec["carries"])
        parts.append(f"z{rec['latent']}: {carried or '(collapsed)'}")
    return "; ".join(parts)


def figure_latents(entry: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The latents a model's heatmap shows, and what they are: the leading latents at the smallest eps whose
    d_eff is defined (and > 0), else the coldest fit point's active latents."""
    defined = [e for e in entry["leading"] if e["d_eff"] and e["latents"]]
    if defined:
        e = min(defined, key=lambda item: item["eps"])
        return e["latents"], (f"leading latents at eps = {e['eps']:g} (d_eff = {e['d_eff']}; T = {e['T']:.3g}, "
                              f"seed {e['seed']})")
    c = entry["coldest"]
    if c["run_id"] is None:
        return [], "no scan point"
    return c["latents"], f"active latents of the coldest scan point (T = {c['T']:.3g}, seed {c['seed']})"


TABLE_COLUMNS = {
    "model": "model id",
    "eps": "tolerance on the normalized distortion D~_K (config analysis.d_eff_eps)",
    "vae_d_eff": "the model's d_eff(eps) = min{K : best D~_K <= eps}, best over its scan points (test split); "
                 "empty when no K reaches eps",
    "vae_run_id": "the scan point that reaches D~_K <= eps at K = d_eff with the smallest D~_K",
    "vae_T": "its temperature T",
    "vae_seed": "its seed",
    "vae_leading": "its latents of rank <= d_eff (rank by M^2), each with the input variables it carries most "
                   "(largest |r| first; r: weighted Pearson correlation of mu_k(x) with the variable, test split)",
    "pca_d_eff": "PCA's d_eff(eps) on the training sample's spectrum",
    "share": "variance share of the PCA selection (config analysis.pca_variance_share)",
    "pca_components_for_share": "PCA components holding that share of the training variance",
    "vif_threshold": "VIF step threshold (config analysis.vif_threshold)",
    "vif_kept": "variables the VIF step keeps (training split)",
    "vif_variables": "their names",
}


def spectroscopy_table(models: Mapping[str, Mapping[str, Any]], collinearity_record: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (model, eps): the model's d_eff and what its leading latents carry, beside PCA's d_eff, the
    PCA components for the variance share and the variables a VIF step keeps (the last two the same per eps)."""
    vif, share = collinearity_record["vif_step"], collinearity_record["pca_share"]
    rows = []
    for model, entry in models.items():
        pca = _as_list(entry["d_eff"].get("pca", [None] * len(entry["leading"])), len(entry["leading"]))
        for lead, pca_k in zip(entry["leading"], pca):
            rows.append({
                "model": model, "eps": lead["eps"], "vae_d_eff": lead["d_eff"], "vae_run_id": lead["run_id"],
                "vae_T": lead["T"], "vae_seed": lead["seed"], "vae_leading": describe_latents(lead["latents"]),
                "pca_d_eff": int(pca_k) if _defined(pca_k) else None, "share": share["share"],
                "pca_components_for_share": share["components"], "vif_threshold": vif["threshold"],
                "vif_kept": len(vif["kept"]), "vif_variables": ", ".join(vif["kept"]),
            })
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    for col in ("vae_d_eff", "pca_d_eff", "vae_seed"):
        table[col] = table[col].astype("Int64")
    return table.astype({"vae_T": float, "eps": float})



def spectroscopy_json(models: Mapping[str, Mapping[str, Any]], table: pd.DataFrame,
                      collinearity_record: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """results/spectroscopy/spectroscopy.json: the table, the VIF step, the PCA share, each model's leading latents
    with their correlations, and how each number was computed (JSON-safe: NaN -> null)."""
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    return _clean({
        "table": records,
        "columns": TABLE_COLUMNS,
        "vif_step": collinearity_record["vif_step"],
        "pca_share": collinearity_record["pca_share"],
        "models": {m: {k: v for k, v in entry.items() if k != "d_eff"} for m, entry in models.items()},
        "settings": dict(settings),
        "method": {
            "latent_variables": f"weighted Pearson r of the posterior mean mu_k(x) of each active latent (M^2 > "
                                f"analysis.active_threshold on the {EVAL_SPLIT} split) with each input variable, over "
                                f"the {EVAL_SPLIT} split with its row weights; scan points at equilibrium "
                                "(analysis.max_m2_drift); r is invariant to the store's standardization",
            "d_eff": "the model's analysis.json d_eff, as summary.json models.<model>.d_eff repeats it (model: best "
                     "D~_K over the fit points, test split; pca: the training sample's eigenvalues)",
            "leading": "per eps, the fit point (test split) with the smallest D~_K at K = d_eff, and its latents of "
                       "rank <= d_eff in rank order; 'carries' lists the n_carried_variables largest |r|",
            "coldest": "the coldest fit point's active latents (the figure's fallback when no d_eff is defined)",
            "vif_step": VIF_PROCEDURE + f"; {TRAIN_SPLIT} split, rows weigh 1",
            "pca_share": collinearity_record["pca_share"]["computed"],
            "fit_points": "at_equilibrium false: no scan point reached equilibrium, all points used (as analyse_model "
                          "does, flagged in analysis.json runs.fits_use_unconverged)",
        },
    })
