"""Figure 1, the cascade: M_k^2 against T (log axis), one curve per rank, linear oracle overlaid."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from .. import oracle

from .style import (NO_THRESHOLD_GREY, T_LABEL, apply_style, hollow_legend_handle, rank_colorbar, rank_palette,
                    scatter_converged, seeds_phrase)
from .tables import annotate_no_equilibrium, fitted_flags, n_seeds, shown_ranks, test_rows, thresholded_ranks


def plot_cascade(latents: pd.DataFrame, runs: pd.DataFrame, spectra: pd.DataFrame, pca: pd.DataFrame, analysis: dict, model: str):
    """M_k^2(T) per rank (seed mean at each T; runs not at equilibrium hollow) with the linear oracle
    [1 - T/T_k]_+, T_k = lambda_k / V from PCA, dashed in the same colour. Ranks with a collapse threshold get
    distinct hues, the others grey (many shades of one map cannot be told apart). With an effective T per run
    (learned decoder variance) the line runs through every run's point in order of T."""
    apply_style()
    active_threshold = analysis["active_threshold"]
    lat = test_rows(latents).copy()
    lat["fitted"] = fitted_flags(lat, runs, lat["run_id"], analysis)
    n = shown_ranks(spectra, latents, active_threshold)
    marked = thresholded_ranks(spectra, analysis)
    colors = rank_palette(n, marked)
    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    T_all = lat["T"].to_numpy(float)
    T_dense = np.logspace(np.log10(T_all.min()) - 0.15, np.log10(T_all.max()) + 0.15, 400)
    lam = pca.sort_values("k")["lambda_over_V"].to_numpy(float)
    # the line follows every scan point (mean over seeds); markers say which runs are at equilibrium
    mean = lat.groupby(["rank", "T"], as_index=False)["M2"].mean()
    for k in range(n, 0, -1):  # rank 1 drawn last, on top
        c = colors[k - 1]
        grey = bool(marked) and k not in marked
        z = 1 if grey else 2
        if k <= len(lam):
            ax.plot(T_dense, oracle.m2(T_dense, lam[k - 1]), ls="--", lw=0.8 if grey else 1.0,
                    color=c, alpha=0.9, zorder=z)
        m = mean[mean["rank"] == k].sort_values("T")
        ax.plot(m["T"], m["M2"], color=c, lw=1.0 if grey else 1.4, zorder=z)
        rows = lat[lat["rank"] == k]
        scatter_converged(ax, rows["T"], rows["M2"], rows["fitted"], c, size=12, zorder=z + 1)
    ax.axhline(active_threshold, color="0.4", lw=0.8, ls=":")
    ax.text(T_dense[0], active_threshold + 0.01, f" active: $M^2 > {active_threshold:g}$", color="0.3",
            fontsize=9, va="bottom")
    ax.set_xscale("log")
    ax.set_xlim(T_dense[0], T_dense[-1])
    ax.set_ylim(-0.02, 1.04)
    ax.set_xlabel(T_LABEL)
    ax.set_ylabel(r"signal fraction $M_k^2 = \overline{\mu_k^2} / (\overline{\mu_k^2} + \overline{s_k^2})$")
    ax.set_title(f"Collapse cascade ({model}, test split)")
    annotate_no_equilibrium(ax, analysis, y=0.62)

    seeds = n_seeds(lat, analysis)
    handles = [Line2D([], [], color="0.2", lw=1.4, marker="o", ms=3,
                      label=f"measured (line: {seeds_phrase(seeds)})" if seeds > 1 else "measured (one seed)"),
               Line2D([], [], color="0.2", lw=1.0, ls="--", label=r"linear oracle $[1 - T/T_k]_+$, $T_k = \lambda_k/V$")]
    if marked and len(marked) < n:
        handles.append(Line2D([], [], color=NO_THRESHOLD_GREY, lw=1.0, label="grey: rank without a threshold"))
    if not lat["fitted"].all():
        handles.append(hollow_legend_handle())
    fig.legend(handles=handles, loc="upper center", ncol=2, fontsize=9, bbox_to_anchor=(0.45, 0.0))
    rank_colorbar(fig, ax, n, colors=colors)
    return fig
