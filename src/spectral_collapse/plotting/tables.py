"""Small table helpers shared by the figure functions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spectral_collapse.analysis.spectrum import eval_split

POOLED = -1


def test_rows(df: pd.DataFrame) -> pd.DataFrame:
    return eval_split(df)


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


def fitted_flags(latents: pd.DataFrame, run_ids, summary: dict) -> np.ndarray:
    """Per entry of ``run_ids``: whether the analysis fitted that run (converged, M^2 settled; the model's
    analysis.json says with which drift bound). Hollow markers show the others."""
    from ..analysis.spectrum import equilibrium_run_ids

    ids = pd.Index(run_ids)
    if summary["runs"].get("fits_use_unconverged"):
        return np.ones(len(ids), dtype=bool)
    max_drift = summary["runs"].get("max_m2_drift", np.inf)
    return ids.isin(list(equilibrium_run_ids(latents, max_drift)))
