"""Figure 2, the spectra: T_c,k, dD~_k and lambda_k/V by rank, and log dD~_k against log T_c,k."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import apply_style, finish_panel, legend_below, rank_colorbar, rank_palette
from .tables import POOLED, annotate_no_equilibrium, nothing_at_equilibrium, pooled, splits_title, thresholded_ranks

NOISE_BELOW_COLDEST = 1e-2  # a utility under 1e-2 x the coldest T at equilibrium is below anything the scan resolves


def _agreement_text(analysis: dict) -> str:
    """Identity R^2, the consecutive rank agreement and Kendall's tau, as reported in the analysis."""
    r2, tau = analysis["identity_r2"], analysis["kendall_tau"]
    text = f"identity $R^2$ = {r2:.3f}" if r2 is not None else "identity $R^2$: n/a"
    text += f"\nsame order: first {analysis['rank_agreement']} of {analysis['rank_agreement_ranks']} ranks"
    text += (f"\nKendall $\\tau$ = {tau:.2f}, {analysis['rank_inversions']} inversions"
             if tau is not None else "\nKendall $\\tau$: n/a")
    return text


def plot_spectra(spectra: pd.DataFrame, analysis: dict, model: str):
    apply_style()
    p = pooled(spectra).copy()
    seeds = spectra[spectra["seed"] != POOLED].copy()
    if nothing_at_equilibrium(analysis):  # thresholds and utilities of runs away from equilibrium: not results
        for col in ("dD", "T_c", "T_c_m2"):
            if col in p:
                p[col] = np.nan
        seeds = seeds.iloc[:0]
    t_min = analysis["threshold_fit"]["scan_T_range"][0]
    floor = NOISE_BELOW_COLDEST * t_min
    fig, (a, b) = plt.subplots(1, 2, figsize=(12.0, 4.8), gridspec_kw={"width_ratios": [1.25, 1]})

    k = p["k"].to_numpy()
    series = [("lambda_over_V", r"PCA $\lambda_k / V$", "0.35", "-", "^"),
              ("dD", r"utility $\Delta\tilde D_k$", "C0", "none", "s"),
              ("T_c", r"threshold $T_{c,k}$ (rate fit)", "C3", "none", "o")]
    if "T_c_m2" in p and np.isfinite(p["T_c_m2"].to_numpy(float)).any():
        series.append(("T_c_m2", r"threshold from $M^2 = 1 - T/T_c$", "C1", "none", "x"))
    k_shown = 1
    for col, label, color, ls, marker in series:
        y = p[col].to_numpy(float)
        # > 1e-9: a numerically zero eigenvalue (bio7 = bio5 - bio6 exactly) would only stretch the axis
        ok = np.isfinite(y) & (y > 1e-9)
        if col == "dD":  # a utility far below the coldest point at equilibrium is numerical noise of a rank never used
            ok &= y >= floor
        k_shown = max([k_shown, *k[ok].tolist()])
        a.plot(k[ok], y[ok], ls=ls, marker=marker, color=color, label=label, ms=4.5 if col == "T_c" else 7,
               mfc="none" if marker in "s^" else color, lw=1.0)
        if len(seeds) and col in ("dD", "T_c"):
            ys = seeds[col].to_numpy(float)
            oks = np.isfinite(ys) & (ys >= floor)
            a.scatter(seeds["k"].to_numpy()[oks], ys[oks], s=6, color=color, alpha=0.35, zorder=1)
            k_shown = max([k_shown, *seeds["k"].to_numpy()[oks].tolist()])
    if len(seeds):
        a.scatter([], [], s=6, color="0.3", alpha=0.35, label="pale: the same for each seed alone")
    a.axhline(t_min, color="0.5", ls=":", lw=1.0)
    a.text(k_shown, t_min, "coldest point at equilibrium ", color="0.4", fontsize=8.5, ha="right", va="bottom")
    a.set_yscale("log")
    finish_panel(a, "a", "rank $k$ (latents ranked by $M^2$)", r"value in units of $T$ (fraction of $V$)",
                 "Spectra by rank", integer_x=True)
    legend_below(a, ncol=2)
    a.text(0.99, 0.99, f"utilities < {NOISE_BELOW_COLDEST:g} x coldest T\nnot drawn (numerical noise)",
           transform=a.transAxes, ha="right", va="top", fontsize=8, color="0.4")
    annotate_no_equilibrium(a, analysis)

    tc, dd = p["T_c"].to_numpy(float), p["dD"].to_numpy(float)
    ok = np.isfinite(tc) & np.isfinite(dd) & (tc > 0) & (dd > 0)
    n = int(k[ok].max()) if ok.any() else 1
    colors = rank_palette(n, thresholded_ranks(spectra, analysis))
    b.scatter(tc[ok], dd[ok], c=[colors[i - 1] for i in k[ok]], s=40, edgecolors="0.2", linewidths=0.5, zorder=3)
    if ok.any():
        lo = min(tc[ok].min(), dd[ok].min()) / 2
        hi = max(tc[ok].max(), dd[ok].max()) * 2
        if hi / lo < 100:  # at least two decades, so that the log axes carry decade ticks
            mid = np.sqrt(hi * lo)
            lo, hi = mid / 10, mid * 10
        b.plot([lo, hi], [lo, hi], color="0.3", ls="--", lw=1.0, label="identity $\\Delta\\tilde D_k = T_{c,k}$")
        b.set_xlim(lo, hi)
        b.set_ylim(lo, hi)
    else:  # no rank has both (e.g. no scan point at equilibrium): an empty panel over the scanned range
        lo, hi = analysis["threshold_fit"]["scan_T_range"]
        lo, hi = (lo, hi) if 0 < lo < hi else (1e-6, 1.0)
        b.set_xlim(lo, hi)
        b.set_ylim(lo, hi)
        if not nothing_at_equilibrium(analysis):
            b.text(0.5, 0.5, "no rank has both a threshold\nand a utility", transform=b.transAxes, ha="center",
                   va="center", fontsize=10, color="C3")
        annotate_no_equilibrium(b, analysis)
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_aspect("equal")
    from matplotlib.ticker import NullFormatter

    for axis in (b.xaxis, b.yaxis):
        axis.set_minor_formatter(NullFormatter())
    if not nothing_at_equilibrium(analysis):  # agreement numbers of runs away from equilibrium: not results
        b.text(0.04, 0.96, _agreement_text(analysis), transform=b.transAxes, va="top", fontsize=9.5)
    finish_panel(b, "b", r"collapse threshold $T_{c,k}$", r"utility $\Delta\tilde D_k$", "Utility against threshold")
    legend_below(b)
    if ok.any():
        rank_colorbar(fig, b, n, colors=colors)
    fig.suptitle(f"{model}: collapse thresholds, utilities and the PCA spectrum ({splits_title(analysis)})", y=1.02)
    return fig
