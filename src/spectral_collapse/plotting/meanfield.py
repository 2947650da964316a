"""Figure 3, the mean-field law: M_k^2 against 1 - T/T_c,k (log-log, slope-1 reference), and the rate
curves rescaled by dD~_k collapsing onto [-1/2 log(T/dD~_k)]_+."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import (apply_style, hollow_legend_handle, legend_below, panel_label, rank_colorbar, rank_palette,
                    scatter_converged)
from ..analysis.spectrum import eval_split
from .tables import (annotate_no_equilibrium, fitted_flags, nothing_at_equilibrium, pooled, split_of, splits_title,
                     thresholded_ranks)


def plot_meanfield(latents: pd.DataFrame, runs: pd.DataFrame, spectra: pd.DataFrame, analysis: dict, model: str):
    apply_style()
    # M^2 and rates of the split the thresholds and the exponent were fitted on (the training split when measured)
    lat = eval_split(latents, split_of(analysis, "meanfield")).copy()
    lat["fitted"] = fitted_flags(lat, runs, lat["run_id"], analysis)
    p = pooled(spectra)
    ok = np.isfinite(p["T_c"].to_numpy(float)) & (p["dD"].to_numpy(float) > 0)
    # thresholds and utilities of runs away from equilibrium are not results: nothing to draw then
    ranks = p.loc[ok, "k"].to_numpy() if not nothing_at_equilibrium(analysis) else np.array([], dtype=int)
    n = int(ranks.max()) if len(ranks) else 1
    colors = rank_palette(n, thresholded_ranks(spectra, analysis))
    tc = dict(zip(p["k"], p["T_c"]))
    dd = dict(zip(p["k"], p["dD"]))
    mf = analysis["meanfield"]
    window = mf["window"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12.0, 4.8))

    max_drift = mf["max_m2_drift"]
    active = float(analysis["active_threshold"])
    y_min = 1e-3
    for k in ranks:
        rows = lat[lat["rank"] == k]
        x = 1.0 - rows["T"].to_numpy(float) / tc[k]
        y = rows["M2"].to_numpy(float)
        sel = (x > 0) & (y > 0)
        used = rows["fitted"].to_numpy(bool)
        if "m2_drift" in rows:
            used = used & ~(rows["m2_drift"].to_numpy(float) > max_drift)  # M^2 still moving: excluded
        scatter_converged(a, x[sel], y[sel], used[sel], colors[k - 1], size=16)
        # the fit uses every active point in the window (collapsed ones, M^2 <= active_threshold, are left out):
        # the axis shows them all
        in_window = sel & (x >= window[0]) & (x <= window[1]) & (y > active)
        if in_window.any():
            y_min = min(y_min, 0.5 * float(y[in_window].min()))
    xs = np.logspace(-3, 0, 50)
    a.plot(xs, xs, color="0.2", ls="--", lw=1.0, label=r"slope 1: $M^2 = 1 - T/T_c$")
    if mf["exponent"] is not None and len(ranks):
        # one line per rank: common slope, the rank's own intercept (fixed effects)
        slope, xw = mf["exponent"], np.logspace(np.log10(window[0]), np.log10(window[1]), 20)
        for k in ranks:
            if mf["intercepts"].get(str(k)) is not None:
                a.plot(xw, np.exp(mf["intercepts"][str(k)]) * xw ** slope, color=colors[k - 1], lw=1.8)
        stderr = mf["stderr"] if mf["stderr"] is not None else float("nan")
        a.plot([], [], color="0.2", lw=1.8,
               label=f"fit in window: common slope {slope:.2f} $\\pm$ {stderr:.2f}\n(one intercept per rank)")
    elif len(ranks):
        a.text(0.04, 0.96, f"exponent fit: too few converged points\nin the window ({mf['n_points']})",
               transform=a.transAxes, va="top", fontsize=9.5, color="C3")
    a.axvspan(window[0], window[1], color="C3", alpha=0.08, lw=0)
    a.axhline(active, color="0.4", ls=":", lw=1.0, label=f"active: $M^2 > {active:g}$ (below: not fitted)")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlim(1e-3, 1.2)
    a.set_ylim(y_min, 1.5)
    a.set_xlabel(r"distance to threshold $1 - T/T_{c,k}$")
    a.set_ylabel(r"signal fraction $M_k^2$")
    a.set_title("Mean-field law")
    handles, _ = a.get_legend_handles_labels()
    handles.append(hollow_legend_handle("hollow: excluded, run not at equilibrium\n(an equilibrium check failed)"))
    legend_below(a, handles, ncol=2)
    annotate_no_equilibrium(a, analysis)
    panel_label(a, "a")

    for k in ranks:
        rows = lat[lat["rank"] == k]
        u = rows["T"].to_numpy(float) / dd[k]
        scatter_converged(b, u, rows["rate"].to_numpy(float), rows["fitted"].to_numpy(bool), colors[k - 1], size=16)
    us = np.logspace(-4, 1, 200)
    b.plot(us, np.clip(-0.5 * np.log(us), 0, None), color="0.2", ls="--", lw=1.2,
           label=r"$[-\frac{1}{2}\log(T/\Delta\tilde D_k)]_+$")
    rate_window = analysis["threshold_fit"]["window_T_over_dD"]
    b.axvspan(rate_window[0], rate_window[1], color="C0", alpha=0.06, lw=0, label="threshold-fit window")
    b.set_xscale("log")
    b.set_xlim(1e-4, 10)
    b.set_ylim(-0.1, max(0.5 * np.log(1e4) + 0.3, 1.0))
    b.set_xlabel(r"rescaled temperature $T / \Delta\tilde D_k$  ($T = \beta\,\sigma_{\mathrm{dec}}^2 / V$)")
    b.set_ylabel(r"rate $R_k$ (nats)")
    b.set_title("Rate curves rescaled by the utility")
    legend_below(b, ncol=2)
    annotate_no_equilibrium(b, analysis)
    panel_label(b, "b")
    if len(ranks):
        rank_colorbar(fig, b, n, colors=colors)
    fig.suptitle(f"{model}: mean-field collapse ({splits_title(analysis)})", y=1.02)
    return fig
