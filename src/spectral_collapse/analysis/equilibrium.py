"""Which scan points are at equilibrium, and how many each check removed (issue 17, item 3).

A point is at equilibrium when three checks pass, in this order:

1. the loss rule: the run converged (validation loss within tolerance: the latents table's `converged`);
2. drift: no latent's M^2 still moves faster than ``analysis.max_m2_drift`` (a run without a record passes);
3. stability, from the collapsed side: a perturbation of the collapsed latents relaxed back (the runs table's
   `stable`; False fails, True passes, missing or NaN = not checked, which passes and is counted as such).
   A settled M^2 does not prove equilibrium: a collapsed mode sits at a saddle, where nothing moves for a long time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .spectrum import run_max_drift

CHECKS = ("loss_rule", "drift", "stability")


def stability_flags(runs: pd.DataFrame) -> pd.Series:
    """Per run_id: 1.0 passed the collapsed-side check, 0.0 failed, NaN not checked (no `stable` column: tables
    older than issue 17)."""
    if "stable" not in runs or "run_id" not in runs:
        return pd.Series(dtype=float)
    flags = pd.to_numeric(runs.set_index("run_id")["stable"].astype("object"), errors="coerce")
    return flags.astype(float)


def equilibrium(latents: pd.DataFrame, runs: pd.DataFrame, max_drift: float) -> tuple[set, dict]:
    """(run_ids at equilibrium, counts): the counts of the points each check removed (a point is counted
    by the first check it fails), how many were not stability-checked, and the total."""
    conv = latents.groupby("run_id")["converged"].all().astype(bool)
    drifting = (run_max_drift(latents).reindex(conv.index) > float(max_drift)).to_numpy(bool)
    stable = stability_flags(runs).reindex(conv.index)
    unstable = (stable == 0.0).to_numpy(bool)
    ok = conv.to_numpy(bool)
    removed = {"loss_rule": int((~ok).sum()), "drift": int((ok & drifting).sum()),
               "stability": int((ok & ~drifting & unstable).sum())}
    keep = ok & ~drifting & ~unstable
    counts = {"points": int(len(conv)), "removed": removed, "equilibrium": int(keep.sum()),
              "stability_not_checked": int((keep & ~np.isfinite(stable.to_numpy(float))).sum()),
              "stability_checked": bool(np.isfinite(stable.to_numpy(float)).any()),
              "max_m2_drift": float(max_drift),
              "rule": "converged (loss rule) AND max m2_drift <= max_m2_drift AND stable is not False"}
    return set(conv.index[keep]), counts


def fit_points(latents: pd.DataFrame, runs: pd.DataFrame, max_drift: float) -> tuple[set, dict, bool]:
    """(run_ids, counts, fallback): the scan points every fit uses: those at equilibrium, or, when none is, every
    point (fallback True: the analysis flags it as runs.fits_use_unconverged)."""
    ids, counts = equilibrium(latents, runs, max_drift)
    return (ids, counts, False) if ids else (set(latents["run_id"].unique()), counts, True)
