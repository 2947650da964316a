"""Agreement between collapse thresholds and utilities (docs/science.md section 2): identity R^2, and how well
the threshold order and the utility order agree (consecutively from the top, and pair by pair)."""

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


def _usable(values: np.ndarray) -> np.ndarray:
    """A threshold or utility can be placed in an order only when it is finite and positive (dD~_k <= 0:
    no utility)."""
    return np.isfinite(values) & (values > 0)


def leading_ranks(thresholds, utilities) -> int:
    """m: how many leading ranks 1..m all have a usable threshold and utility (the ranks `rank_agreement`
    compares)."""
    ok = _usable(np.asarray(thresholds, dtype=float)) & _usable(np.asarray(utilities, dtype=float))
    return int(np.argmin(ok)) if not ok.all() else len(ok)


def rank_agreement(thresholds, utilities) -> int:
    """How many leading ranks the threshold order and the utility order agree on, consecutively.

    Both sequences are indexed by rank (entry i = rank i + 1). Let m be the number of leading ranks 1..m
    that all have a usable threshold and utility: the first rank without one ends the count, because a
    rank that cannot be placed in both orders cannot be said to agree (and skipping it would let the
    ranks after it count as leading). Ranks 1..m are ordered by threshold (descending) and by utility
    (descending), ties broken by rank; the result is the number of leading positions where both orders
    name the same rank. See `rank_concordance` for why Kendall's tau is reported alongside.
    """
    t = np.asarray(thresholds, dtype=float)
    u = np.asarray(utilities, dtype=float)
    m = leading_ranks(t, u)
    idx = np.arange(m)
    order_t = idx[np.lexsort((idx, -t[:m]))]
    order_u = idx[np.lexsort((idx, -u[:m]))]
    differ = np.flatnonzero(order_t != order_u)
    return int(differ[0]) if len(differ) else m


def rank_concordance(thresholds, utilities) -> dict:
    """Kendall's tau (tau-b) between thresholds and utilities and the number of inversions (discordant
    pairs), over every rank that has both (usable), wherever it sits.

    Why next to the consecutive agreement: ranks are assigned by M^2 within each run, so R_1 >= R_2 >= ...
    by construction and the fitted thresholds come out (nearly) in rank order whatever the data. The
    consecutive count then mostly asks where the utilities first leave rank order, and one swap of two
    near-degenerate ranks ends it however well the rest agrees. Tau and the inversions weigh every pair
    of ranks: they tell an isolated swap (one inversion) from a reordering.
    Returns kendall_tau (NaN with fewer than 2 ranks), inversions, n_ranks (the ranks compared).
    """
    from scipy.stats import kendalltau

    t = np.asarray(thresholds, dtype=float)
    u = np.asarray(utilities, dtype=float)
    ok = _usable(t) & _usable(u)
    t, u = t[ok], u[ok]
    n = len(t)
    discordant = np.sign(t[:, None] - t[None, :]) * np.sign(u[:, None] - u[None, :]) < 0
    tau = float(kendalltau(t, u).statistic) if n >= 2 else float("nan")
    return {"kendall_tau": tau, "inversions": int(np.triu(discordant, 1).sum()), "n_ranks": int(n)}


def relative_error(estimate, reference) -> np.ndarray:
    """|estimate - reference| / reference, elementwise (NaN where either is missing)."""
    estimate = np.asarray(estimate, dtype=float)
    reference = np.asarray(reference, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(estimate - reference) / reference


def identity_r2_ci(T_c, dD, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% bootstrap interval of `log_identity_r2`: the 2.5 and 97.5 percentiles over resamples of the ranks
    (pairs drawn with replacement; resamples with fewer than 2 distinct ranks are skipped). NaNs with fewer
    than 3 ranks."""
    T_c = np.asarray(T_c, dtype=float)
    dD = np.asarray(dD, dtype=float)
    ok = np.isfinite(T_c) & np.isfinite(dD) & (T_c > 0) & (dD > 0)
    x, y = np.log(T_c[ok]), np.log(dD[ok])
    if len(x) < 3:
        return [float("nan"), float("nan")]
    pick = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    vals = np.array([identity_r2(x[p], y[p]) for p in pick if len(np.unique(p)) >= 2])
    vals = vals[np.isfinite(vals)]
    return [float(v) for v in np.percentile(vals, [2.5, 97.5])] if len(vals) else [float("nan")] * 2
