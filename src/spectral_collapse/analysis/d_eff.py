"""Truncation: effective dimension d_eff(eps) = min{K : D~_K <= eps}, the PCA truncation curve, and the
power-law fit of D~_K against K (docs/science.md sections 4-5)."""

from __future__ import annotations

import numpy as np


def pca_distortion(lambda_over_V) -> np.ndarray:
    """D~_K of PCA for K = 0..d: sum_{k>K} lambda_k / V (tail sums, no cancellation)."""
    lam = np.sort(np.asarray(lambda_over_V, dtype=float))[::-1]
    tail = np.cumsum(lam[::-1])[::-1]
    return np.append(tail, 0.0)


def d_eff(D_of_K, eps_list, K=None) -> dict[float, float]:
    """d_eff(eps) = the smallest K with D~_K <= eps, for each eps; NaN when no K reaches it.

    `D_of_K[i]` is D~ at K[i] (default K = 0, 1, ...).
    """
    D = np.asarray(D_of_K, dtype=float)
    K = np.arange(len(D)) if K is None else np.asarray(K)
    out = {}
    for eps in eps_list:
        hit = np.flatnonzero(np.isfinite(D) & (D <= eps))
        out[float(eps)] = float(K[hit[0]]) if len(hit) else float("nan")
    return out


def powerlaw_fit(K, D, ranks) -> dict:
    """Fit D~_K = A K^-p by least squares in log-log over ranks[0] <= K <= ranks[1] (positive D only;
    config analysis.powerlaw_ranks, paper: D~_K ~ K^-4 over ranks 4-17).

    Returns exponent p, prefactor A, the ranks actually used and their count (NaN when < 3 points).
    """
    K = np.asarray(K, dtype=float)
    D = np.asarray(D, dtype=float)
    sel = np.isfinite(D) & (D > 0) & (K >= ranks[0]) & (K <= ranks[1]) & (K > 0)
    out = {"exponent": float("nan"), "prefactor": float("nan"), "ranks": [int(ranks[0]), int(ranks[1])],
           "n_points": int(sel.sum())}
    if sel.sum() < 3:
        return out
    slope, intercept = np.polyfit(np.log(K[sel]), np.log(D[sel]), 1)
    out.update(exponent=float(-slope), prefactor=float(np.exp(intercept)),
               ranks=[int(K[sel].min()), int(K[sel].max())])
    return out
