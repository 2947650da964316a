"""Figure 2, the spectra: T_c,k, dD~_k and lambda_k/V by rank, and log dD~_k against log T_c,k."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import apply_style, finish_panel, rank_colorbar, rank_colors
from .tables import POOLED, pooled


def _agreement_text(summary: dict) -> str:
    """Identity R^2, the consecutive rank agreement and Kendall's tau, as reported in the summary."""
    r2, tau = summary["identity_r2"], summary["kendall_tau"]
    text = f"identity $R^2$ = {r2:.3f}" if r2 is not None else "identity $R^2$: n/a"
    text += f"\nsame order: first {summary['rank_agreement']} of {summary['rank_agreement_ranks']} ranks"
    text += (f"\nKendall $\\tau$ = {tau:.2f}, {summary['rank_inversions']} inversions"
             if tau is not None else "\nKendall $\\tau$: n/a")
    return text


def plot_spectra(spectra: pd.DataFrame, summary: dict, model: str):
    apply_style()
    p = pooled(spectra)
    seeds = spectra[spectra["seed"] != POOLED]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12.0, 4.8), gridspec_kw={"width_ratios": [1.25, 1]})

    k = p["k"].to_numpy()
    series = [("lambda_over_V", r"PCA $\lambda_k / V$", "0.35", "-", "^"),
              ("dD", r"utility $\Delta\tilde D_k$", "C0", "none", "s"),
              ("T_c", r"threshold $T_{c,k}$ (rate fit)", "C3", "none", "o")]
    if "T_c_m2" in p and np.isfinite(p["T_c_m2"].to_numpy(float)).any():
        series.append(("T_c_m2", r"threshold from $M^2 = 1 - T/T_c$", "C1", "none", "x"))
    for col, label, color, ls, marker in series:
        y = p[col].to_numpy(float)
        # > 1e-9: a numerically zero eigenvalue (bio7 = bio5 - bio6 exactly) would only stretch the axis
        ok = np.isfinite(y) & (y > 1e-9)
        a.plot(k[ok], y[ok], ls=ls, marker=marker, color=color, label=label, ms=4.5 if col == "T_c" else 7,
               mfc="none" if marker in "s^" else color, lw=1.0)
        if len(seeds) and col in ("dD", "T_c"):
            ys = seeds[col].to_numpy(float)
            oks = np.isfinite(ys) & (ys > 0)
            a.scatter(seeds["k"].to_numpy()[oks], ys[oks], s=6, color=color, alpha=0.35, zorder=1)
    t_min = summary["threshold_fit"]["scan_T_range"][0]
    a.axhline(t_min, color="0.5", ls=":", lw=1.0)
    a.text(k.max(), t_min, "coldest scan point ", color="0.4", fontsize=8.5, ha="right", va="bottom")
    a.set_yscale("log")
    finish_panel(a, "a", "rank $k$ (latents ranked by $M^2$)", r"value in units of $T$ (fraction of $V$)",
                 "Spectra by rank", integer_x=True, fontsize=9, loc="lower left")

    tc, dd = p["T_c"].to_numpy(float), p["dD"].to_numpy(float)
    ok = np.isfinite(tc) & np.isfinite(dd) & (tc > 0) & (dd > 0)
    n = int(k[ok].max()) if ok.any() else 1
    colors = rank_colors(n)
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
        lo, hi = summary["threshold_fit"]["scan_T_range"]
        lo, hi = (lo, hi) if 0 < lo < hi else (1e-6, 1.0)
        b.set_xlim(lo, hi)
        b.set_ylim(lo, hi)
        b.text(0.5, 0.5, "no rank has both a threshold\nand a utility", transform=b.transAxes, ha="center",
               va="center", fontsize=10, color="C3")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_aspect("equal")
    from matplotlib.ticker import NullFormatter

    for axis in (b.xaxis, b.yaxis):
        axis.set_minor_formatter(NullFormatter())
    b.text(0.04, 0.96, _agreement_text(summary), transform=b.transAxes, va="top", fontsize=9.5)
    finish_panel(b, "b", r"collapse threshold $T_{c,k}$", r"utility $\Delta\tilde D_k$", "Utility against threshold",
                 loc="lower right", fontsize=9)
    rank_colorbar(fig, b, n)
    fig.suptitle(f"{model}: collapse thresholds, utilities and the PCA spectrum (test split)", y=1.02)
    return fig
