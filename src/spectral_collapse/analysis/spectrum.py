"""The utility spectrum (docs/science.md section 2): the best (lowest) D~_K reached at each rank K across the
scan, differenced: dD~_k = best D~_{k-1} - best D~_k."""

from __future__ import annotations

import numpy as np
import pandas as pd

EVAL_SPLIT = "test"


def eval_split(df: pd.DataFrame, split: str = EVAL_SPLIT) -> pd.DataFrame:
    """Rows of the evaluation split (test; the whole table when it has no `split` column)."""
    if "split" not in df:
        return df
    rows = df[df["split"] == split]
    if rows.empty:
        raise ValueError(f"no rows of split {split!r} (splits present: {sorted(df['split'].unique())})")
    return rows


def run_max_drift(latents: pd.DataFrame) -> pd.Series:
    """Per run_id: the largest M^2 drift of any latent at the end of training (NaN where not recorded)."""
    if "m2_drift" not in latents:
        return pd.Series(np.nan, index=pd.Index(latents["run_id"].unique(), name="run_id"))
    return latents.groupby("run_id")["m2_drift"].max()


def best_distortion(pruning: pd.DataFrame, run_ids: set | None = None) -> pd.DataFrame:
    """Per K: the lowest D~_K over the given runs (all runs when None), and the T where it is reached.

    Returns columns K, best_D, T_best (sorted by K).
    """
    rows = pruning if run_ids is None else pruning[pruning["run_id"].isin(run_ids)]
    rows = rows[np.isfinite(rows["D_tilde"].to_numpy(dtype=float))]
    if rows.empty:
        raise ValueError("no pruning rows to take the best D~_K from")
    idx = rows.groupby("K")["D_tilde"].idxmin()
    best = rows.loc[idx, ["K", "D_tilde", "T"]].rename(columns={"D_tilde": "best_D", "T": "T_best"})
    return best.sort_values("K").reset_index(drop=True)


def utility_spectrum(pruning: pd.DataFrame, run_ids: set | None = None) -> pd.DataFrame:
    """Columns k (1..K_max), best_D (best D~_k), dD (best D~_{k-1} - best D~_k), T_best.

    dD can come out slightly negative for ranks that never carry signal (noise); callers treat dD <= 0 as
    "no utility" (no threshold fit, left out of log-scale fits).
    """
    best = best_distortion(pruning, run_ids)
    K = best["K"].to_numpy()
    D = best["best_D"].to_numpy(dtype=float)
    if K[0] != 0 or np.any(np.diff(K) != 1):
        raise ValueError("the pruning table must hold D~_K for every K = 0..K_max")
    return pd.DataFrame({
        "k": K[1:].astype(int),
        "best_D": D[1:],
        "dD": D[:-1] - D[1:],
        "T_best": best["T_best"].to_numpy(dtype=float)[1:],
    })
