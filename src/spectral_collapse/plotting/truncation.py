"""Figure 4, truncation: D~_K against T for each K; the best D~_K against K with PCA and the power-law
fits; the d_eff(eps) table."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from spectral_collapse.analysis.d_eff import pca_distortion

from .style import (T_LABEL, apply_style, finish_panel, hollow_legend_handle, legend_below, panel_label, rank_colorbar,
                    rank_colors, scatter_converged)
from .tables import annotate_no_equilibrium, fitted_flags, nothing_at_equilibrium, pooled, test_rows


def plot_truncation(pruning: pd.DataFrame, latents: pd.DataFrame, runs: pd.DataFrame, spectra: pd.DataFrame,
                    pca: pd.DataFrame, analysis: dict, model: str):
    apply_style()
    prn = test_rows(pruning).copy()
    prn["fitted"] = fitted_flags(test_rows(latents), runs, prn["run_id"], analysis)
    p = pooled(spectra)
    fig = plt.figure(figsize=(15.0, 4.8))
    gs = fig.add_gridspec(1, 3, width_ratios=[1.15, 1, 0.55], wspace=0.55)
    a, b, c = fig.add_subplot(gs[0]), fig.add_subplot(gs[1]), fig.add_subplot(gs[2])

    K_max = int(prn["K"].max())
    colors = rank_colors(K_max + 1)
    mean = prn.groupby(["K", "T"], as_index=False)["D_tilde"].mean()  # every scan point; hollow = not fitted
    for K in range(K_max + 1):
        m = mean[mean["K"] == K].sort_values("T")
        a.plot(m["T"], m["D_tilde"], color=colors[K], lw=1.2)
        rows = prn[(prn["K"] == K) & ~prn["fitted"]]
        scatter_converged(a, rows["T"], rows["D_tilde"], rows["fitted"], colors[K], size=12)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel(T_LABEL)
    a.set_ylabel(r"distortion $\tilde D_K$ (first $K$ ranks kept)")
    a.set_title(r"Truncation curves $\tilde D_K(T)$")
    if not prn["fitted"].all():
        legend_below(a, [hollow_legend_handle("hollow: not at equilibrium (an equilibrium\ncheck failed): not fitted")])
    annotate_no_equilibrium(a, analysis)
    rank_colorbar(fig, a, K_max + 1, label="ranks kept $K$", start=0)
    panel_label(a, "a")

    lam = pca.sort_values("k")["lambda_over_V"].to_numpy(float)
    pca_curve = pca_distortion(lam)
    Ks = np.arange(len(pca_curve))
    b.plot(Ks[:-1], pca_curve[:-1], "-", color="0.35", marker="^", ms=5, mfc="none", label=r"PCA $\sum_{k>K}\lambda_k/V$")
    best = np.r_[np.nan if analysis["best_D0"] is None else analysis["best_D0"], p["best_D"].to_numpy(float)]
    Kb = np.arange(len(best))
    none_fitted = nothing_at_equilibrium(analysis)
    b.plot(Kb, best, "o", color="C0", ms=5, mfc="none" if none_fitted else "C0",
           label=f"{model}: best $\\tilde D_K$ over the scan" + (" (no run at equilibrium)" if none_fitted else ""))
    # model and PCA fitted over the same ranks (the model's window); PCA also over the configured window
    for key, color, ls, what in (("model", "C0", ":", model), ("pca", "0.35", ":", "PCA"),
                                 ("pca_configured_window", "0.6", "-.", "PCA, configured ranks")):
        fit = analysis["powerlaw"][key]
        if fit["exponent"] is not None and not (none_fitted and key in ("model", "pca")):  # their window: the model's
            r = np.linspace(fit["ranks"][0], fit["ranks"][1], 50)
            b.plot(r, fit["prefactor"] * r ** (-fit["exponent"]), color=color, ls=ls, lw=2.0,
                   label=f"{what}: $K^{{-{fit['exponent']:.1f}}}$ (ranks {fit['ranks'][0]}-{fit['ranks'][1]})")
    b.set_yscale("log")
    # PCA's last eigenvalues can be ~0 (bio7 = bio5 - bio6 exactly): do not let them set the axis
    shown = np.r_[best[np.isfinite(best) & (best > 0)], pca_curve[pca_curve > 1e-9]]
    if len(shown):
        b.set_ylim(bottom=0.5 * shown.min(), top=2.0 * shown.max())
    finish_panel(b, "b", "rank $K$", r"$\tilde D_K$", "Best distortion against rank", integer_x=True)
    legend_below(b)
    annotate_no_equilibrium(b, analysis, y=0.3)

    d = analysis["d_eff"]
    eps, dm, dp = d["eps"], d["model"], d["pca"]
    if none_fitted:  # reached only by runs away from equilibrium: not a result
        dm = [None] * len(eps)
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{int(v)}"  # noqa: E731
    cells = [[f"{100 * e:g}%", fmt(x), fmt(y)] for e, x, y in zip(eps, dp, dm)]
    c.axis("off")
    if cells:
        table = c.table(cellText=cells, colLabels=[r"$\varepsilon$", "PCA", model], loc="center", cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(10)
        table.scale(1.0, 1.6)
    c.set_title(r"$d_{\mathrm{eff}}(\varepsilon) = \min\{K: \tilde D_K \leq \varepsilon\}$", fontsize=11)
    c.text(0.5, 0.02, "- : not reached in the scan" + (" at equilibrium" if none_fitted else ""),
           transform=c.transAxes, ha="center", fontsize=8, color="0.3")
    fig.suptitle(f"{model}: truncation and effective dimension (test split)", y=1.02)
    return fig
