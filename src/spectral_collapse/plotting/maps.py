"""Figure 5, maps: the leading latent means mu_k(x) on the world grid, and their correlations with the
input variables (named, with units)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import apply_style

UNIT_SYMBOLS = {"degC": "\u00b0C", "deg C": "\u00b0C"}
X_TICKS = (-120, -60, 0, 60, 120)  # degrees; a regional grid keeps those inside its extent
Y_TICKS = (-30, 0, 30, 60)
DRAW_CELL_DEG = 1.0 / 3.0  # draw cells of about 20' (2 x 2 means of the 10' grid): plenty for print, 4x lighter PDFs


def _variable_label(row) -> str:
    units = UNIT_SYMBOLS.get(str(row["units"]).strip(), str(row["units"]).strip())
    long_name = str(row["long_name"]).strip()
    named = f"{row.name}  {long_name}" if long_name and long_name != str(row.name) else str(row.name)
    return named + (f" [{units}]" if units and units != "1" else "")


def _coarsen(field: np.ndarray, f: int) -> np.ndarray:
    if f <= 1:
        return field
    h, w = (field.shape[0] // f) * f, (field.shape[1] // f) * f
    blocks = field[:h, :w].reshape(h // f, f, w // f, f)
    with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3))


def plot_maps(maps, correlations: pd.DataFrame, model: str):
    """`maps`: xarray Dataset with mu (rank, lat, lon); `correlations`: rank, variable, long_name, units, r."""
    apply_style()
    n = int(maps.sizes["rank"])
    ncols = 2 if n > 1 else 1
    nrows = int(np.ceil(n / ncols))
    fig = plt.figure(figsize=(19.0, max(3.1 * nrows, 6.5) + 0.8), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.55, 1.0], wspace=0.02)
    if "lat" in maps.coords:
        _draw_maps(left, maps, n, nrows, ncols)
    else:
        _draw_distributions(left, maps)
    _draw_correlations(right, correlations)
    T = maps.attrs.get("T")
    where = "on the grid" if "lat" in maps.coords else "on the test rows"
    title = f"{model}: leading latent coordinates {where}" + (f" (model trained at T = {T:.3g})" if T is not None else "")
    fig.suptitle(title, fontsize=13)
    return fig


def _draw_distributions(left, maps) -> None:
    """A table source has no grid: the distribution of each leading latent's mean over the test rows."""
    frame = pd.DataFrame({
        "rank": np.repeat([f"rank {r} (latent {z}), $M^2$ = {m:.3f}" for r, z, m in
                           zip(maps["rank"].values, maps["latent"].values, maps["M2"].values)], maps.sizes["test_sample"]),
        "mu": maps["mu"].values.ravel()})
    ax = left.subplots()
    sns.violinplot(data=frame, x="mu", y="rank", ax=ax, color="0.75", inner="quartile", cut=0)
    ax.set_xlabel(r"posterior mean $\mu_k(x)$")
    ax.set_ylabel("")
    left.suptitle("a   posterior means $\\mu_k(x)$ of the leading latents over the test rows", fontsize=12, x=0.02, ha="left")


def _draw_maps(left, maps, n: int, nrows: int, ncols: int) -> None:
    lat, lon = maps["lat"].values, maps["lon"].values
    cell = abs(float(lat[1] - lat[0])) if len(lat) > 1 else 0.0
    half = cell / 2
    coarsen = max(1, round(DRAW_CELL_DEG / cell)) if cell else 1  # a coarser map (the reference bundle's) as is
    extent = [lon.min() - half, lon.max() + half, lat.min() - half, lat.max() + half]
    origin = "upper" if lat[0] > lat[-1] else "lower"
    ylim = (max(extent[2], -60.0), min(extent[3], 84.0))  # a global grid without Antarctica's ice
    if ylim[0] >= ylim[1]:  # a grid wholly south of 60S or north of 84N: as it is
        ylim = (extent[2], extent[3])
    M2 = maps["M2"].values
    latent = maps["latent"].values
    axes = np.atleast_1d(left.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            ax.axis("off")
            continue
        field = _coarsen(maps["mu"].values[i].astype(np.float32), coarsen)
        v = float(np.nanpercentile(np.abs(field), 99)) or 1.0
        im = ax.imshow(field, extent=extent, origin=origin, cmap="RdBu_r", vmin=-v, vmax=v,
                       interpolation="nearest", rasterized=True)
        ax.set_facecolor("0.85")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(*ylim)
        ax.set_xticks([t for t in X_TICKS if extent[0] < t < extent[1]] or ax.get_xticks())
        ax.set_yticks([t for t in Y_TICKS if ylim[0] < t < ylim[1]] or ax.get_yticks())
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(*ylim)
        ax.tick_params(labelsize=8)
        ax.grid(False)
        ax.set_title(f"rank {i + 1} (latent {latent[i]}),  $M^2$ = {M2[i]:.3f}", fontsize=10.5)
        cb = left.colorbar(im, ax=ax, fraction=0.04, pad=0.01, shrink=0.85)
        cb.set_label(r"$\mu_k(x)$", fontsize=9)
        cb.ax.tick_params(labelsize=8)
    left.suptitle("a   posterior means $\\mu_k(x)$ of the leading latents (grey: sea / no data)",
                  fontsize=12, x=0.02, ha="left")


def correlation_heatmap(mat: pd.DataFrame, ax, cbar_kws: dict) -> None:
    """An annotated r heatmap (variables x latents) on a diverging scale fixed at [-1, 1]: the maps figure's and the
    spectroscopy figure's."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # seaborn 0.13 on matplotlib 3.11
        sns.heatmap(mat, ax=ax, cmap="RdBu_r", vmin=-1, vmax=1, center=0, annot=True, fmt=".2f",
                    annot_kws={"fontsize": 8.5}, linewidths=0.4, linecolor="white", cbar_kws=cbar_kws)


def _draw_correlations(right, correlations: pd.DataFrame) -> None:
    hax = right.subplots()
    corr = correlations.copy()
    labels = corr.drop_duplicates("variable").set_index("variable").apply(_variable_label, axis=1)
    order = list(dict.fromkeys(corr["variable"]))
    mat = corr.pivot(index="variable", columns="rank", values="r").reindex(order)
    mat.index = [labels[v] for v in mat.index]
    mat.columns = [f"rank {c}" for c in mat.columns]
    correlation_heatmap(mat, hax, {"label": "Pearson $r$", "orientation": "horizontal", "shrink": 0.6, "pad": 0.06,
                                   "aspect": 30})
    hax.tick_params(axis="y", labelrotation=0, labelsize=9)
    hax.tick_params(axis="x", labelsize=9.5, labelrotation=0)
    hax.set_xlabel("")
    right.suptitle(f"b   correlation with the {corr['variable'].nunique()} input variables (weighted Pearson $r$)", fontsize=12,
                   x=0.02, ha="left")
