"""Truncation: effective dimension d_eff(eps) = min{K : D~_K <= eps}, the PCA truncation curve, and the
power-law fit of D~_K against K (docs/science.md sections 4-5)."""

from __future__ import annotations

import numpy as np


def pca_distortion(lambda_over_V) -> np.ndarray:
    """D~_K of PCA for K = 0..d: sum_{k>K} lambda_k / V (tail sums, no cancellation)."""
    lam = np.sort(np.asarray(lambda_over_V, dtype=float))[::-1]
    tail = np.cumsum(lam[::-1])[::-1]
    return np.append(tail, 0.0)


def pca_heldout_distortion(pca, split: str = "test") -> tuple[np.ndarray, str]:
    """D~_K of a PCA reconstruction of the held-out `split` with the TRAINING eigenvectors, K = 0..d, in the
    training order of the axes (not re-sorted), and how it was obtained: from the PCA table's
    `msq_<split>_over_V` (second moment about the training mean, the like-for-like comparison of the model's
    held-out D~_K), or, in tables older than issue 17, from a_<split> x lambda_k / V (the split's variance about
    its own mean: the offset of its mean is missing)."""
    pca = pca.sort_values("k")
    col = f"msq_{split}_over_V"
    if col in pca:
        per_axis, source = pca[col].to_numpy(float), f"pca.parquet {col} (about the training mean)"
    else:
        per_axis = pca[f"a_{split}"].to_numpy(float) * pca["lambda_over_V"].to_numpy(float)
        source = f"a_{split} x lambda_k/V (old PCA table: variance about the split's own mean, its offset missing)"
    tail = np.cumsum(per_axis[::-1])[::-1]
    return np.append(tail, 0.0), source


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
    x, y = np.log(K[sel]), np.log(D[sel])
    slope, intercept = np.polyfit(x, y, 1)
    out.update(exponent=float(-slope), prefactor=float(np.exp(intercept)),
               ranks=[int(K[sel].min()), int(K[sel].max())], ci95=_slope_ci(x, y, negate=True))
    return out


def _slope_ci(x: np.ndarray, y: np.ndarray, negate: bool = False, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% bootstrap interval of a least-squares slope (points resampled with replacement; degenerate resamples,
    all at one x, skipped), in one vectorized pass."""
    pick = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    xs, ys = x[pick], y[pick]
    dx = xs - xs.mean(axis=1, keepdims=True)
    sxx = (dx * dx).sum(axis=1)
    ok = sxx > 1e-12
    slopes = (dx * (ys - ys.mean(axis=1, keepdims=True))).sum(axis=1)[ok] / sxx[ok]
    if negate:
        slopes = -slopes
    return [float(v) for v in np.percentile(slopes, [2.5, 97.5])] if len(slopes) > 1 else [float("nan")] * 2


def powerlaw_crossover(K, D, last: int) -> dict:
    """Where the head of D~_K turns into its power-law tail: a continuous two-segment fit in log-log over
    1 <= K <= last, log D = a + s_head min(log K - log b, 0) + s_tail max(log K - log b, 0), with the break b
    the rank (2 <= b <= last - 2, at least two ranks on each side) of least squared residual.

    Returns the crossover rank b and the head and tail exponents (-s); nulls when fewer than 5 ranks.
    """
    K = np.asarray(K, dtype=float)
    D = np.asarray(D, dtype=float)
    sel = np.isfinite(D) & (D > 0) & (K >= 1) & (K <= last)
    out = {"K": None, "head_exponent": float("nan"), "tail_exponent": float("nan"), "ranks": [1, int(last)],
           "fit": "continuous two-segment line in log D~_K vs log K; break at the rank of least squared residual"}
    x, y = np.log(K[sel]), np.log(D[sel])
    if len(x) < 5:
        return out
    best = None
    for b in K[sel][1:-1]:
        xb = np.log(b)
        if (x < xb).sum() < 1 or (x > xb).sum() < 1:
            continue
        A = np.column_stack([np.ones_like(x), np.minimum(x - xb, 0), np.maximum(x - xb, 0)])
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        sse = float(((A @ coef - y) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, int(b), coef)
    if best is not None:
        out.update(K=best[1], head_exponent=float(-best[2][1]), tail_exponent=float(-best[2][2]))
    return out
