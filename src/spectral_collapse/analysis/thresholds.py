"""Collapse thresholds and the mean-field exponent (docs/science.md sections 2-3).

- Rate fit: R_k(T) = [-1/2 log(T / T_c,k)]_+ with the slope fixed, least squares in log T_c,k over the
  window rate_window[0] dD~_k <= T <= rate_window[1] dD~_k (config analysis.rate_window).
- A fitted threshold is reported only when the rank was active somewhere in the scan and the threshold
  lies inside the scanned T range (`threshold_status`).
- Signal-fraction fit (linear family): M_k^2(T) = [1 - T / T_c,k]_+ near onset.
- Mean-field exponent: common slope of log M_k^2 against log(1 - T/T_c,k) over ranks, one intercept per
  rank, in a window of 1 - T/T_c (config analysis.meanfield_window), with its standard error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

M2_WINDOW = (1e-1, 3.0)        # T / T_ref (near onset, both sides of the threshold)
ACTIVE_RATE = 1e-3             # nats: a rank "carries rate" at a scan point above this
ACTIVE_M2 = 1e-3
# A threshold is resolved only with this many points in its rate-fit window, at least one active and one collapsed
# (issue 17, item 5): a one-point fit only reproduces that point.
MIN_WINDOW_POINTS = 3
# ... and at least this many of them active. Stricter than the one: with the slope fixed, one active point
# fixes T_c by itself (T exp(2R)) and the collapsed points only bracket it, so the fit would reproduce that point.
MIN_ACTIVE_POINTS = 2
# The rate-fit window reaches up to COLLAPSED_SIDE x dD~_k (at least), so that it holds collapsed points: with the
# paper's upper edge T = dD~_k and T_c,k = dD~_k (the linear law) no collapsed point would ever lie inside it. Above
# T_c the clipped model predicts R = 0, so these points constrain T_c from above without biasing it.
COLLAPSED_SIDE = 3.0
# Mean-field exponent: a rank enters the fit only with this many points in the window, and the exponent is
# reported only with this many such ranks (issue 17, item 2); otherwise it is "not resolved".
MIN_MEANFIELD_POINTS = 3
MIN_MEANFIELD_RANKS = 3


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
    losses = np.sum((y[None, :] - model(grid[:, None], log_T[None, :])) ** 2, axis=1)  # the grid in one call
    i = int(np.argmin(losses))
    step = grid[1] - grid[0]
    res = minimize_scalar(loss, bounds=(grid[i] - step, grid[i] + step), method="bounded",
                          options={"xatol": 1e-8})
    return float(res.x) if res.fun <= losses[i] else float(grid[i])


# The fit models: oracle.rate and oracle.m2 (the one statement of the law) written in u = log T_c and log T,
# the variables the fit searches in; the same values, in the arithmetic the fit has always used.
def _rate_model(u: float, log_T: np.ndarray) -> np.ndarray:
    return np.maximum(0.5 * (u - log_T), 0.0)


def _m2_model(u: float, log_T: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - np.exp(log_T - u), 0.0)


def _in_window(T, y, ref: float, window) -> tuple[np.ndarray, np.ndarray, int]:
    """The finite points with window[0] * ref <= T <= window[1] * ref, and their number (none when ref is not
    a positive number)."""
    T = np.asarray(T, dtype=float)
    y = np.asarray(y, dtype=float)
    if not (np.isfinite(ref) and ref > 0):
        return T[:0], y[:0], 0
    sel = np.isfinite(T) & np.isfinite(y) & (T > 0) & (T >= window[0] * ref) & (T <= window[1] * ref)
    return T[sel], y[sel], int(sel.sum())


def fit_rate_threshold(T, R, dD, window) -> tuple[float, int]:
    """T_c,k from the rate of one rank: fit R(T) = [-1/2 log(T/T_c)]_+ (slope fixed) over
    window[0] * dD <= T <= window[1] * dD. Returns (T_c, number of points in the window).

    NaN when dD <= 0, or no point in the window carries rate (> 1e-3 nats). Whether the number is reported
    as the rank's threshold is decided by `threshold_status`.
    """
    T, R, n = _in_window(T, R, dD, window)
    active = R > ACTIVE_RATE
    if not active.any():
        return float("nan"), n
    log_T = np.log(T)
    start = float(np.mean(2.0 * R[active] + log_T[active]))  # closed form when every point is active
    return float(np.exp(_fit_log_threshold(log_T, R, _rate_model, start))), n


def fit_window(window) -> tuple[float, float]:
    """The rate-fit window in units of dD~_k: the configured one with its upper edge raised to COLLAPSED_SIDE."""
    return float(window[0]), float(max(window[1], COLLAPSED_SIDE))


def window_support(T, M2, dD, window, active_threshold: float) -> dict:
    """Points of one rank in its rate-fit window: how many, how many active (M^2 > active_threshold) and how many
    collapsed (M^2 <= active_threshold)."""
    T, M2, n = _in_window(T, M2, dD, window)
    n_active = int(np.sum(M2 > active_threshold))
    return {"n": n, "n_active": n_active, "n_collapsed": n - n_active}


def resolved(support: dict) -> bool:
    """Issue 17, item 5: at least MIN_WINDOW_POINTS points in the window, at least MIN_ACTIVE_POINTS active and one
    collapsed."""
    return (support["n"] >= MIN_WINDOW_POINTS and support["n_active"] >= MIN_ACTIVE_POINTS
            and support["n_collapsed"] >= 1)


def in_scan(T_c: float, T_range: tuple[float, float]) -> bool:
    """Whether a threshold lies inside the scanned range [min T, max T] (beyond it, it is an extrapolation)."""
    return bool(np.isfinite(T_c) and T_range[0] <= T_c <= T_range[1])


def threshold_status(T_c: float, dD: float, ever_active: bool, T_range: tuple[float, float],
                     support: dict | None = None) -> str:
    """Why rank k's rate-fit threshold is reported or not, first reason first.

    A rate of a few 1e-3 nats is enough for the fit to return a number, so a rank that never carries
    signal (pure noise in the rate) would get a threshold decades away from anything measured. A
    threshold is therefore reported ("fitted") only when the rank was active (M^2 > active_threshold) at
    some scan point used, and the fitted T_c lies inside the scanned range T_range = (min T, max T).
    Otherwise: "never_active", "no_utility" (dD~_k <= 0: no fit window), "no_rate_in_window" (no point
    of the window carries rate), "outside_scan" or, given the window's `support`, "unresolved" (fewer than
    MIN_WINDOW_POINTS points, or no active or no collapsed point among them: `resolved`).
    """
    if not ever_active:
        return "never_active"
    if not (np.isfinite(dD) and dD > 0):
        return "no_utility"
    if not np.isfinite(T_c):
        return "no_rate_in_window"
    if not in_scan(T_c, T_range):
        return "outside_scan"
    return "unresolved" if support is not None and not resolved(support) else "fitted"


def fit_m2_threshold(T, M2, T_ref, window=M2_WINDOW) -> tuple[float, int]:
    """T_c,k from the signal fraction (linear family): fit M^2(T) = [1 - T/T_c]_+ near onset,
    over window[0] * T_ref <= T <= window[1] * T_ref (T_ref: the rate threshold, else dD~_k).
    Returns (T_c, number of points); NaN when no point in the window is active."""
    T, M2, n = _in_window(T, M2, T_ref, window)
    active = M2 > ACTIVE_M2
    if not active.any():
        return float("nan"), n
    log_T = np.log(T)
    start = float(np.mean(log_T[active] - np.log1p(-np.clip(M2[active], 0, 0.999))))
    return float(np.exp(_fit_log_threshold(log_T, M2, _m2_model, start))), n


def meanfield_exponent(T, M2, T_c, rank, window, n_boot: int = 1000, seed: int = 0,
                       m2_floor: float = 0.0, min_points: int = MIN_MEANFIELD_POINTS,
                       min_ranks: int = MIN_MEANFIELD_RANKS) -> dict:
    """Mean-field exponent: the common slope b of log M_k^2 = a_k + b log(1 - T/T_c,k) (1 expected), with
    one intercept a_k per rank (fixed effects).

    A rank's prefactor a_k (e.g. an M^2 saturating below 1) is a property of the rank, not of the law; with
    one shared intercept, prefactor differences between ranks that cover different stretches of
    1 - T/T_c would leak into the slope. The slope is therefore fitted within ranks (each rank's points
    centred on their own means). Points with window[0] <= 1 - T/T_c <= window[1] and M^2 > m2_floor are used:
    a point below the active threshold is collapsed, already past the true threshold, and would pull the slope
    up (issue 17, item 2). A rank enters only with at least `min_points` such points at distinct T (two points fix
    any slope; two seeds at one T are one value of 1 - T/T_c),
    and the exponent is reported only with at least `min_ranks` such ranks; otherwise it is null and `status`
    says "not resolved" and why. The bootstrap over ranks gives the uncertainty that also covers threshold
    errors shared by a rank's points (`ci95`: its 2.5 and 97.5 percentiles); the OLS standard error is reported
    alongside. Returns exponent, status, stderr (the larger of the two), stderr_ols, stderr_bootstrap, ci95,
    per_rank ({rank: [slope, n_points]}), intercepts ({rank: a_k}), n_points, n_groups (the number of ranks
    fitted; the key keeps its name in analysis.json), window.
    """
    T = np.asarray(T, dtype=float)
    M2 = np.asarray(M2, dtype=float)
    T_c = np.asarray(T_c, dtype=float)
    rank = np.asarray(rank)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = 1.0 - T / T_c
    sel = np.isfinite(x) & np.isfinite(M2) & (M2 > max(m2_floor, 0.0)) & (x >= window[0]) & (x <= window[1])
    if sel.any():  # ranks with too few distinct T in the window do not enter (seeds at one T are one x)
        pairs = pd.DataFrame({"g": rank[sel], "T": T[sel]}).drop_duplicates()
        counts = pairs.groupby("g").size()
        sel &= np.isin(rank, counts.index[counts >= min_points].to_numpy())
    lx, ly = np.log(x[sel]), np.log(M2[sel])
    ranks, inverse = np.unique(rank[sel], return_inverse=True)
    out = {"exponent": float("nan"), "stderr": float("nan"), "stderr_ols": float("nan"),
           "stderr_bootstrap": float("nan"), "ci95": [float("nan"), float("nan")], "per_rank": {},
           "intercepts": {}, "n_points": int(sel.sum()), "n_groups": int(len(ranks)),
           "min_points_per_rank": int(min_points), "min_ranks": int(min_ranks),
           "window": [float(window[0]), float(window[1])],
           "status": f"not resolved: {len(ranks)} ranks with >= {min_points} points in the window "
                     f"({min_ranks} needed)"}
    if len(ranks) < max(min_ranks, 1) or len(lx) < 3:
        return out
    n_r = np.bincount(inverse)
    mean_x = np.bincount(inverse, lx) / n_r
    mean_y = np.bincount(inverse, ly) / n_r
    dx, dy = lx - mean_x[inverse], ly - mean_y[inverse]
    sxx = np.bincount(inverse, dx * dx)  # per rank: the slope's data are these within-rank sums
    sxy = np.bincount(inverse, dx * dy)
    if sxx.sum() == 0:
        out["status"] = "not resolved: no spread in 1 - T/T_c within any rank"
        return out
    slope = float(sxy.sum() / sxx.sum())
    dof = len(lx) - len(ranks) - 1
    resid = dy - slope * dx
    se = float(np.sqrt(np.sum(resid ** 2) / dof / sxx.sum())) if dof > 0 else float("nan")
    boot = np.array([])
    if len(ranks) >= 3 and n_boot > 0:
        pick = np.random.default_rng(seed).integers(0, len(ranks), size=(n_boot, len(ranks)))
        den = sxx[pick].sum(axis=1)
        boot = sxy[pick].sum(axis=1)[den > 0] / den[den > 0]
    se_boot = float(np.std(boot, ddof=1)) if len(boot) > 1 else float("nan")
    ci = [float(v) for v in np.percentile(boot, [2.5, 97.5])] if len(boot) > 1 else [float("nan")] * 2
    with np.errstate(divide="ignore", invalid="ignore"):
        per_rank = {g: [float(sxy[i] / sxx[i]) if sxx[i] > 0 else float("nan"), int(n_r[i])]
                    for i, g in enumerate(ranks.tolist())}
    out.update(exponent=slope, stderr_ols=se, stderr_bootstrap=se_boot, stderr=float(np.nanmax([se, se_boot])),
               ci95=ci, per_rank=per_rank, status="resolved",
               intercepts={g: float(mean_y[i] - slope * mean_x[i]) for i, g in enumerate(ranks.tolist())})
    return out
