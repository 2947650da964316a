"""Which scan points are at equilibrium, and how many each check removed (issue 17, item 3).

A point is at equilibrium when every check it was given passes, in this order:

1. the loss rule: the run converged (validation loss within tolerance: the latents table's `converged`);
2. drift: no latent's M^2 still moves faster than ``analysis.max_m2_drift`` (a run without a record passes);
3. stability, from the collapsed side: a perturbation of the collapsed latents relaxed back (the runs table's
   `stable`; False fails, True passes, missing or NaN = not checked, which passes and is counted as such).
   A settled M^2 does not prove equilibrium: a collapsed mode sits at a saddle, where nothing moves for a long time.
4. both sides, where a scan was compared with its other side (issue 19: a chain from the hot side with its
   collapsed latents reopened, and one from the cold side; ``start_check.mark_sides``): the runs table's
   `sides_agree` (False fails: the two sides' ranked M_k^2 differ by more than ``start_check.BRACKET_TOL`` at
   some rank, or they agree while the cold side fails one of checks 1-3 there: ``start_check.confirm_cold_side``).
   A scan without the column is not compared, and its counts and rule do not mention the check.
   Why: on the linear family the two sides agree only where both are within 0.05 of the exact oracle (with the
   cold side held to its own checks), so agreement is an equilibrium test the oracle validates
   (reference/cold_end/, reference/two_sided_encoder/).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .spectrum import run_max_drift

CHECKS = ("loss_rule", "drift", "stability", "sides")


def stability_flags(runs: pd.DataFrame) -> pd.Series:
    """Per run_id: 1.0 passed the collapsed-side check, 0.0 failed, NaN not checked (no `stable` column: tables
    older than issue 17)."""
    if "stable" not in runs or "run_id" not in runs:
        return pd.Series(dtype=float)
    flags = pd.to_numeric(runs.set_index("run_id")["stable"].astype("object"), errors="coerce")
    return flags.astype(float)


def side_flags(runs: pd.DataFrame) -> pd.Series | None:
    """Per run_id: 1.0 the two sides agree, 0.0 they disagree, NaN not compared; None: the scan was never
    compared with its other side (no `sides_agree` column)."""
    if "sides_agree" not in runs or "run_id" not in runs:
        return None
    return pd.to_numeric(runs.set_index("run_id")["sides_agree"].astype("object"), errors="coerce").astype(float)


def first_failed_check(latents: pd.DataFrame, runs: pd.DataFrame, max_drift: float) -> pd.DataFrame:
    """Per run_id (index): ``failed``, the first check the point fails ("" at equilibrium), ``stable`` and
    ``sides_agree`` (the flags, NaN where not checked). The column ``sides_agree`` is there only for a scan that
    was compared with its other side."""
    conv = latents.groupby("run_id")["converged"].all().astype(bool)
    drifting = (run_max_drift(latents).reindex(conv.index) > float(max_drift)).to_numpy(bool)
    stable = stability_flags(runs).reindex(conv.index).to_numpy(float)
    sides = side_flags(runs)
    sides = None if sides is None else sides.reindex(conv.index).to_numpy(float)
    failing = [~conv.to_numpy(bool), drifting, stable == 0.0] + ([] if sides is None else [sides == 0.0])
    failed = np.full(len(conv), "", dtype=object)
    for name, fails in zip(CHECKS, failing):
        failed[(failed == "") & fails] = name
    table = pd.DataFrame({"failed": failed, "stable": stable}, index=conv.index)
    if sides is not None:
        table["sides_agree"] = sides
    return table


def equilibrium(latents: pd.DataFrame, runs: pd.DataFrame, max_drift: float,
                checks: pd.DataFrame | None = None) -> tuple[set, dict]:
    """(run_ids at equilibrium, counts): the counts of the points each check removed (a point is counted
    by the first check it fails), how many were not stability-checked (or not compared with the other side),
    and the total. ``checks``: ``first_failed_check`` of the same arguments, when the caller has it."""
    table = first_failed_check(latents, runs, max_drift) if checks is None else checks
    compared = "sides_agree" in table
    keep = (table["failed"] == "").to_numpy(bool)
    stable = table["stable"].to_numpy(float)
    removed = {name: int((table["failed"] == name).sum()) for name in CHECKS if compared or name != "sides"}
    rule = "converged (loss rule) AND max m2_drift <= max_m2_drift AND stable is not False"
    side_counts = {}
    if compared:
        side_counts = {"sides_not_compared": int((keep & ~np.isfinite(table["sides_agree"].to_numpy(float))).sum())}
        rule += " AND sides_agree is not False"
    counts = {"points": int(len(table)), "removed": removed, "equilibrium": int(keep.sum()),
              "stability_not_checked": int((keep & ~np.isfinite(stable)).sum()),
              "stability_checked": bool(np.isfinite(stable).any()),
              **side_counts, "max_m2_drift": float(max_drift), "rule": rule}
    return set(table.index[keep]), counts


def fit_points(latents: pd.DataFrame, runs: pd.DataFrame, max_drift: float) -> tuple[set, dict, bool]:
    """(run_ids, counts, fallback): the scan points every fit uses: those at equilibrium, or, when none is, every
    point (fallback True: the analysis flags it as runs.fits_use_unconverged)."""
    ids, counts = equilibrium(latents, runs, max_drift)
    return (ids, counts, False) if ids else (set(latents["run_id"].unique()), counts, True)
