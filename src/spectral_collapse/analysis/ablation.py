"""The direct test of the ordering claim (issue 17, item 6): does M^2 rank latents by usefulness?

In every model at equilibrium, the single-latent ablation utility of each active latent (`ablation_dD`: the increase
of D~ when that latent alone is set to 0, every other latent kept, measured on the held-out split) is compared with
its M^2 by Kendall's tau. Unlike the threshold/utility agreement, this is not circular: ranks are sorted by M^2, but
the ablation utilities are measured independently of that order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_LATENTS = 2  # Kendall's tau needs two active latents


def per_model_tau(latents: pd.DataFrame, run_ids: set, active_threshold: float) -> pd.DataFrame:
    """Per run (model at equilibrium): run_id, seed, T, n_active (active latents with a measured utility),
    kendall_tau between their M^2 and their ablation_dD (NaN with fewer than MIN_LATENTS)."""
    from scipy.stats import kendalltau

    cols = ["run_id", "seed", "T", "n_active", "kendall_tau"]
    if "ablation_dD" not in latents:
        return pd.DataFrame(columns=cols)
    rows = latents[latents["run_id"].isin(run_ids) & (latents["M2"] > active_threshold)]
    rows = rows[np.isfinite(rows["ablation_dD"].to_numpy(float))]
    out = []
    for run_id, g in rows.groupby("run_id"):
        n = len(g)
        tau = float(kendalltau(g["M2"], g["ablation_dD"]).statistic) if n >= MIN_LATENTS else float("nan")
        out.append({"run_id": run_id, "seed": int(g["seed"].iloc[0]), "T": float(g["T"].iloc[0]), "n_active": n,
                    "kendall_tau": tau})
    return pd.DataFrame(out, columns=cols)


def _aggregate(taus: pd.DataFrame) -> dict:
    t = taus["kendall_tau"].to_numpy(float)
    t = t[np.isfinite(t)]
    if len(t) == 0:
        return {"n_models": 0, "mean": None, "min": None, "max": None, "share_tau_1": None}
    return {"n_models": int(len(t)), "mean": float(t.mean()), "min": float(t.min()), "max": float(t.max()),
            "share_tau_1": float(np.mean(np.isclose(t, 1.0)))}


def ablation_order(latents: pd.DataFrame, run_ids: set, active_threshold: float) -> dict:
    """analysis.json's ablation_order block: status, pooled aggregate over the scan, per seed, and per model (T, seed, tau)."""
    if "ablation_dD" not in latents or not np.isfinite(latents["ablation_dD"].to_numpy(float)).any():
        return {"status": "not measured: the tables hold no ablation_dD (measured from issue 17 on)",
                "split": None, "pooled": _aggregate(pd.DataFrame({"kendall_tau": []})), "per_seed": {},
                "per_model": []}
    taus = per_model_tau(latents, run_ids, active_threshold)
    return {"status": "measured", "split": str(latents["split"].iloc[0]) if "split" in latents else None,
            "pooled": _aggregate(taus),
            "per_seed": {int(s): _aggregate(g) for s, g in taus.groupby("seed")},
            "per_model": [{"T": r.T, "seed": int(r.seed), "n_active": int(r.n_active), "kendall_tau": r.kendall_tau}
                          for r in taus.itertuples()]}
