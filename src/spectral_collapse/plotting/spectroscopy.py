"""Latent spectroscopy figure (issue 20): which input variables a model's leading latents carry, as a heatmap of
the weighted Pearson r of each latent's posterior mean with each input variable (variables x latents)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from .maps import _variable_label, correlation_heatmap
from .style import apply_style


def correlation_matrix(latents: Sequence[Mapping[str, Any]], variables: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """r as a variables x latents frame: rows labelled with the variable (long name and units when the store has
    them), columns "z<latent>" with the rank and M^2."""
    info = pd.DataFrame(list(variables), columns=["variable", "long_name", "units"]).fillna("").set_index("variable")
    names = list(info.index) or list(dict.fromkeys(v for rec in latents for v in rec["r"]))
    labels = [_variable_label(info.loc[v]) if v in info.index else v for v in names]
    columns = {f"z{rec['latent']}\nrank {rec['rank']}\n$M^2$ {rec['M2']:.2f}": [rec["r"].get(v) for v in names]
               for rec in latents}
    return pd.DataFrame(columns, index=labels, dtype=float)


def plot_latent_variables(entry: Mapping[str, Any], latents: Sequence[Mapping[str, Any]], what: str):
    """The heatmap of one model (``entry``: spectroscopy.model_spectroscopy's record; ``latents``/``what``: from
    spectroscopy.figure_latents)."""
    apply_style()
    mat = correlation_matrix(latents, entry.get("variables", []))
    n_var, n_lat = max(mat.shape[0], 1), max(mat.shape[1], 1)
    fig, ax = plt.subplots(figsize=(min(4.5 + 0.95 * n_lat, 22.0), 1.8 + 0.36 * n_var))
    if mat.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, "no active latent at any scan point used", ha="center", va="center", fontsize=12)
    else:
        correlation_heatmap(mat, ax, {"label": "weighted Pearson $r$ of $\\mu_k(x)$ with the variable", "shrink": 0.7})
        ax.tick_params(axis="y", labelrotation=0, labelsize=9)
        ax.tick_params(axis="x", labelrotation=0, labelsize=8.5)
        ax.set_xlabel("latent (rank by $M^2$ on the test split)")
        ax.set_ylabel("")
        ax.grid(False)
    status = "" if entry.get("at_equilibrium", True) else " (no point at equilibrium: all points)"
    ax.set_title(f"{entry['model']}: input variables carried by the {what}{status}", fontsize=11, loc="left")
    return fig
