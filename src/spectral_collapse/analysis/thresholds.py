"""Collapse thresholds and the mean-field exponent (STUDY.md sections 2-3).

- Rate fit: R_k(T) = [-1/2 log(T / T_c,k)]_+ with the slope fixed, least squares in log T_c,k over the
  window 1e-2 dD~_k <= T <= dD~_k.
- Signal-fraction fit (linear family): M_k^2(T) = [1 - T / T_c,k]_+ near onset.
- Mean-field exponent: slope of log M_k^2 against log(1 - T/T_c,k) pooled over ranks, in a window of
  1 - T/T_c (config analysis.meanfield_window), with its standard error.
"""

from __future__ import annotations

import numpy as np

RATE_WINDOW = (1e-2, 1.0)      # T / dD~_k
M2_WINDOW = (1e-1, 3.0)        # T / T_ref (near onset, both sides of the threshold)
ACTIVE_RATE = 1e-3             # nats: a rank "carries rate" at a scan point above this
ACTIVE_M2 = 1e-3


def _fit_log_threshold(log_T: np.ndarray, y: np.ndarray, model, start: float) -> float:
    """Least-squares u = log T_c for a one-parameter clipped model y ~ model(u, log_T).

    The loss is piecewise smooth in u but not convex (a kink where u crosses a data point), so a dense grid
    over +-6 e-folds around the start is refined by a bounded scalar minimisation.
    """
    from scipy.optimize import minimize_scalar

    def loss(u: float) -> float:
        return float(np.sum((y - model(u, log_T)) ** 2))

    lo = min(start, log_T.min()) - 6.0
    hi = max(start, log_T.max()) + 6.0
    grid = np.linspace(lo, hi, 1201)
    losses = np.array([loss(u) for u in grid])
    i = int(np.argmin(losses))
    step = grid[1] - grid[0]
    res = minimize_scalar(loss, bounds=(grid[i] - step, grid[i] + step), method="bounded",
                          options={"xatol": 1e-8})
    return float(res.x) if res.fun <= losses[i] else float(grid[i])


def _rate_model(u: float, log_T: np.ndarray) -> np.ndarray:
    return np.maximum(0.5 * (u - log_T), 0.0)


def _m2_model(u: float, log_T: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - np.exp(log_T - u), 0.0)


def fit_rate_threshold(T, R, dD, window=RATE_WINDOW) -> tuple[float, int]:
    """T_c,k from the rate of one rank: fit R(T) = [-1/2 log(T/T_c)]_+ (slope fixed) over
    window[0] * dD <= T <= window[1] * dD. Returns (T_c, number of points in the window).

    NaN when dD <= 0, or no point in the window carries rate (> 1e-3 nats).
    """
    T = np.asarray(T, dtype=float)
    R = np.asarray(R, dtype=float)
    if not (np.isfinite(dD) and dD > 0):
        return float("nan"), 0
    sel = np.isfinite(T) & np.isfinite(R) & (T > 0) & (T >= window[0] * dD) & (T <= window[1] * dD)
    n = int(sel.sum())
    T, R = T[sel], R[sel]
    active = R > ACTIVE_RATE
    if not active.any():
        return float("nan"), n
    log_T = np.log(T)
    start = float(np.mean(2.0 * R[active] + log_T[active]))  # closed form when every point is active
    return float(np.exp(_fit_log_threshold(log_T, R, _rate_model, start))), n


def fit_m2_threshold(T, M2, T_ref, window=M2_WINDOW) -> tuple[float, int]:
    """T_c,k from the signal fraction (linear family): fit M^2(T) = [1 - T/T_c]_+ near onset,
    over window[0] * T_ref <= T <= window[1] * T_ref (T_ref: the rate threshold, else dD~_k).
    Returns (T_c, number of points); NaN when no point in the window is active."""
    T = np.asarray(T, dtype=float)
    M2 = np.asarray(M2, dtype=float)
    if not (np.isfinite(T_ref) and T_ref > 0):
        return float("nan"), 0
    sel = np.isfinite(T) & np.isfinite(M2) & (T > 0) & (T >= window[0] * T_ref) & (T <= window[1] * T_ref)
    n = int(sel.sum())
    T, M2 = T[sel], M2[sel]
    active = M2 > ACTIVE_M2
    if not active.any():
        return float("nan"), n
    log_T = np.log(T)
    start = float(np.mean(log_T[active] - np.log1p(-np.clip(M2[active], 0, 0.999))))
    return float(np.exp(_fit_log_threshold(log_T, M2, _m2_model, start))), n


def meanfield_exponent(T, M2, T_c, group=None, window=(0.05, 0.5), n_boot: int = 200, seed: int = 0) -> dict:
    """Mean-field exponent: slope b of log M^2 = a + b log(1 - T/T_c), pooled over ranks (1 expected).

    Points with window[0] <= 1 - T/T_c <= window[1] and M^2 > 0 are used. `group` (e.g. the rank) is used
    for a bootstrap over groups, which gives the uncertainty that also covers threshold errors shared by a
    rank's points; the OLS standard error is reported alongside.
    Returns exponent, stderr (the larger of the two), stderr_ols, stderr_bootstrap, intercept, n_points,
    n_groups, window.
    """
    T = np.asarray(T, dtype=float)
    M2 = np.asarray(M2, dtype=float)
    T_c = np.asarray(T_c, dtype=float)
    group = np.zeros(len(T), dtype=int) if group is None else np.asarray(group)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = 1.0 - T / T_c
    sel = np.isfinite(x) & np.isfinite(M2) & (M2 > 0) & (x >= window[0]) & (x <= window[1])
    lx, ly, g = np.log(x[sel]), np.log(M2[sel]), group[sel]
    out = {"exponent": float("nan"), "stderr": float("nan"), "stderr_ols": float("nan"),
           "stderr_bootstrap": float("nan"), "intercept": float("nan"), "n_points": int(sel.sum()),
           "n_groups": int(len(np.unique(g))), "window": [float(window[0]), float(window[1])]}
    if len(lx) < 3 or np.ptp(lx) == 0:
        return out

    def ols(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
        am = a.mean()
        sxx = float(np.sum((a - am) ** 2))
        slope = float(np.sum((a - am) * (b - b.mean())) / sxx)
        intercept = float(b.mean() - slope * am)
        resid = b - intercept - slope * a
        se = float(np.sqrt(np.sum(resid ** 2) / max(len(a) - 2, 1) / sxx))
        return slope, intercept, se

    slope, intercept, se = ols(lx, ly)
    groups = np.unique(g)
    boot = []
    if len(groups) >= 3 and n_boot > 0:
        rng = np.random.default_rng(seed)
        index = {k: np.flatnonzero(g == k) for k in groups}
        for _ in range(n_boot):
            pick = np.concatenate([index[k] for k in rng.choice(groups, size=len(groups))])
            if np.ptp(lx[pick]) > 0:
                boot.append(ols(lx[pick], ly[pick])[0])
    se_boot = float(np.std(boot, ddof=1)) if len(boot) > 1 else float("nan")
    out.update(exponent=slope, intercept=intercept, stderr_ols=se, stderr_bootstrap=se_boot,
               stderr=float(np.nanmax([se, se_boot])))
    return out
