"""Small table helpers shared by the figure functions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spectral_collapse.analysis.spectrum import eval_split

POOLED = -1


def test_rows(df: pd.DataFrame) -> pd.DataFrame:
    return eval_split(df)


def split_of(analysis: dict, quantity: str) -> str:
    """The split a quantity of the analysis comes from (its `splits` block; the test split for older ones)."""
    return str(analysis.get("splits", {}).get(quantity, "test"))


def splits_title(analysis: dict) -> str:
    """'test split', or 'thresholds: train split, utilities: test split' when they differ (issue 17)."""
    thr, util = split_of(analysis, "thresholds"), split_of(analysis, "utilities")
    return f"{util} split" if thr == util else f"thresholds: {thr} split, utilities: {util} split"


def pooled(spectra: pd.DataFrame) -> pd.DataFrame:
    rows = spectra[spectra["seed"] == POOLED] if "seed" in spectra else spectra
    return rows.sort_values("k").reset_index(drop=True)


def shown_ranks(spectra: pd.DataFrame, latents: pd.DataFrame, active: float, cap: int = 24) -> int:
    """How many leading ranks to draw: every rank active (M^2 > threshold) somewhere in the scan, or with a
    threshold; at least 1, at most `cap`."""
    lat = test_rows(latents)
    active_ranks = lat.loc[lat["M2"] > active, "rank"]
    n_active = int(active_ranks.max()) if len(active_ranks) else 1
    p = pooled(spectra)
    with_tc = p.loc[np.isfinite(p["T_c"].to_numpy(float)), "k"]
    n_tc = int(with_tc.max()) if len(with_tc) else 1
    return int(min(max(n_active, n_tc, 1), cap))


def fitted_flags(latents: pd.DataFrame, runs: pd.DataFrame, run_ids, analysis: dict) -> np.ndarray:
    """Per entry of ``run_ids``: whether that run is at equilibrium, the only runs a figure draws filled. The
    analysis' own rule decides (``analysis.equilibrium.equilibrium`` on the scan's latents and runs tables, with
    the drift bound the model's analysis.json records). Never all runs: when no run reached equilibrium every
    marker is hollow, whatever the analysis fitted then, and ``no_equilibrium_note`` says so on the figure."""
    from ..analysis.equilibrium import equilibrium

    at_eq, _ = equilibrium(latents, runs, analysis["runs"]["max_m2_drift"])
    return pd.Index(run_ids).isin(list(at_eq))


def nothing_at_equilibrium(analysis: dict) -> bool:
    """Whether no run of the model reached equilibrium (then the analysis' fits, if any, used runs that are
    not at equilibrium: a figure draws none of them)."""
    return analysis.get("runs", {}).get("equilibrium", 1) == 0


def no_equilibrium_note(analysis: dict) -> str | None:
    """The figure's own text when no run reached equilibrium (None otherwise)."""
    if not nothing_at_equilibrium(analysis):
        return None
    total = analysis.get("runs", {}).get("total")
    of = f" (0 of {total})" if total is not None else ""
    return f"no scan point reached equilibrium{of}:\nevery point hollow, nothing fitted"


def annotate_no_equilibrium(ax, analysis: dict, x: float = 0.5, y: float = 0.5) -> None:
    """Write ``no_equilibrium_note`` on the axes (centred, in red, over a white box) when it applies."""
    note = no_equilibrium_note(analysis)
    if note is not None:
        ax.text(x, y, note, transform=ax.transAxes, ha="center", va="center", fontsize=10.5, color="C3",
                zorder=10, bbox={"facecolor": "white", "edgecolor": "C3", "alpha": 0.85, "boxstyle": "round"})


def thresholded_ranks(spectra: pd.DataFrame, analysis: dict) -> set[int]:
    """Ranks with a collapse threshold (pooled over seeds); none when no run reached equilibrium, since a
    threshold fitted to runs away from equilibrium is not a result."""
    if nothing_at_equilibrium(analysis):
        return set()
    p = pooled(spectra)
    return {int(k) for k in p.loc[np.isfinite(p["T_c"].to_numpy(float)), "k"]}


def n_seeds(latents: pd.DataFrame, analysis: dict) -> int:
    """How many seeds the figure's tables hold."""
    if "seed" in latents:
        return int(latents["seed"].nunique())
    return len(analysis.get("seeds", [0]))
