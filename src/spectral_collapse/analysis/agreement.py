"""Agreement between collapse thresholds and utilities (STUDY.md section 2)."""

from __future__ import annotations

import numpy as np


def identity_r2(x, y) -> float:
    """R^2 of y against the identity line y = x: 1 - SS_res / SS_tot with SS_res = sum (y - x)^2 and
    SS_tot = sum (y - mean y)^2. Not a squared correlation: an offset or a slope != 1 lowers it (and it
    can be negative). Used with x = log T_c,k and y = log dD~_k (any log base gives the same value).
    Non-finite pairs are dropped; NaN with fewer than 2 pairs.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return float("nan")
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - x) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else float("-inf")
    return 1.0 - ss_res / ss_tot


def log_identity_r2(T_c, dD) -> float:
    """identity_r2(log T_c, log dD) over the ranks where both are positive and finite."""
    T_c = np.asarray(T_c, dtype=float)
    dD = np.asarray(dD, dtype=float)
    ok = np.isfinite(T_c) & np.isfinite(dD) & (T_c > 0) & (dD > 0)
    return identity_r2(np.log(T_c[ok]), np.log(dD[ok]))


def rank_agreement(thresholds, utilities) -> int:
    """How many leading ranks the threshold order and the utility order agree on.

    Both sequences are indexed by rank (entry i = rank i + 1). Ranks are ordered by threshold
    (descending) and by utility (descending); the result is the largest n such that the first n ranks
    of both orders are the same ranks in the same order. Ranks where either value is not finite are
    dropped; ties are broken by rank.
    """
    t = np.asarray(thresholds, dtype=float)
    u = np.asarray(utilities, dtype=float)
    ok = np.flatnonzero(np.isfinite(t) & np.isfinite(u))
    order_t = ok[np.lexsort((ok, -t[ok]))]
    order_u = ok[np.lexsort((ok, -u[ok]))]
    n = 0
    for a, b in zip(order_t, order_u):
        if a != b:
            break
        n += 1
    return int(n)


def relative_error(estimate, reference) -> np.ndarray:
    """|estimate - reference| / reference, elementwise (NaN where either is missing)."""
    estimate = np.asarray(estimate, dtype=float)
    reference = np.asarray(reference, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(estimate - reference) / reference
