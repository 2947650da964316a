"""Shared figure style: readable in print, axes in T = beta sigma_dec^2 / V, PNG and PDF output."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

T_LABEL = r"temperature $T = \beta\,\sigma_{\mathrm{dec}}^2 / V$ (dimensionless)"
RANK_CMAP = "viridis"        # rank 1 dark purple, high ranks green-yellow (never pale yellow)
PNG_DPI = 150
MARKER_SIZE = 22


def apply_style() -> None:
    """Seaborn 'ticks' on a white background, fonts sized for a printed page at the saved width."""
    sns.set_theme(context="paper", style="ticks", font_scale=1.25, rc={
        "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6,
        "legend.frameon": False, "savefig.bbox": "tight", "savefig.pad_inches": 0.05,
        "pdf.fonttype": 42, "ps.fonttype": 42, "axes.titleweight": "bold",
        "lines.linewidth": 1.5,
    })


def rank_colors(n: int) -> list:
    """One colour per rank 1..n, from a perceptually uniform map that prints in grey scale."""
    cmap = plt.get_cmap(RANK_CMAP)
    return [cmap(0.88 * i / max(n - 1, 1)) for i in range(n)]


NO_THRESHOLD_GREY = "0.72"


def _distinct_colors() -> list:
    """18 colours in which neighbours differ in hue: tab20's dark shades, then its light ones, without greys."""
    tab = plt.get_cmap("tab20").colors
    return [tab[i] for i in range(0, 20, 2) if i != 14] + [tab[i] for i in range(1, 20, 2) if i != 15]


def rank_palette(n: int, thresholded) -> list:
    """One colour per rank 1..n: ranks with a collapse threshold in distinct hues (neighbouring ranks never look
    alike, unlike n shades of one map), the others grey. With no thresholded rank at all, every rank gets a hue
    (the figure is then only a picture of the measured curves)."""
    marked = {int(k) for k in thresholded}
    if not marked & set(range(1, n + 1)):
        marked = set(range(1, n + 1))
    hues = _distinct_colors()
    out, i = [], 0
    for k in range(1, n + 1):
        if k in marked:
            out.append(hues[i % len(hues)])
            i += 1
        else:
            out.append(matplotlib.colors.to_rgba(NO_THRESHOLD_GREY))
    return out


def rank_colorbar(fig, ax, n: int, label: str = "rank $k$ (by $M^2$)", start: int = 1, colors=None) -> None:
    """A discrete colourbar standing in for a legend of n rank colours (values start..start+n-1); ``colors``
    (default: ``rank_colors``) one per value. A qualitative palette gets a tick on every value."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    qualitative = colors is not None
    cmap = ListedColormap(colors if qualitative else rank_colors(n))
    norm = BoundaryNorm(np.arange(start - 0.5, start + n + 0.5), n)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    last = start + n - 1
    every = n <= 12 or (qualitative and n <= 32)
    ticks = np.arange(start, last + 1) if every else np.unique(np.r_[start, np.arange(5, last + 1, 5), last])
    cb = fig.colorbar(sm, ax=ax, ticks=ticks, fraction=0.05, pad=0.02)
    cb.set_label(label)
    if every and n > 12:
        cb.ax.tick_params(labelsize=7.5)
    cb.ax.invert_yaxis()  # rank 1 at the top, like a ranked list


def scatter_converged(ax, x, y, converged, color, label=None, marker="o", size=MARKER_SIZE, zorder=3):
    """Points the fits use filled, the others (not at equilibrium: a check of analysis.equilibrium failed) hollow
    (same colour)."""
    x, y, c = np.asarray(x), np.asarray(y), np.asarray(converged, dtype=bool)
    if c.any():
        ax.scatter(x[c], y[c], s=size, color=color, marker=marker, label=label, zorder=zorder, linewidths=0.6)
    if (~c).any():
        ax.scatter(x[~c], y[~c], s=size * 1.3, facecolors="none", edgecolors=[color], marker=marker,
                   zorder=zorder, linewidths=1.0)


def seeds_phrase(n_seeds: int) -> str:
    """What a line through the scan points is: the mean over seeds, or (one seed) the points themselves."""
    return "mean over seeds" if n_seeds > 1 else "one seed"


def legend_below(ax, handles=None, ncol: int = 1, **kw) -> None:
    """The axes' legend under its x label, outside the data."""
    if handles is None:
        handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=ncol, fontsize=9,
              borderaxespad=0.0, **kw)


def hollow_legend_handle(label: str = "hollow: not at equilibrium (an equilibrium check failed): not fitted"):
    from matplotlib.lines import Line2D

    return Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor="0.3",
                  markersize=6, label=label)


def save_figure(fig, png: str | Path, pdf: str | Path | None = None) -> None:
    """Save PNG (and PDF) atomically; close the figure. The tight bounding box (rc savefig.bbox) is computed
    once and given to both saves: "tight" would draw the figure twice per file."""
    from spectral_collapse.provenance import atomic_path

    bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])
    for path, kw in ((png, {"dpi": PNG_DPI}), (pdf, {})):
        if path is None:
            continue
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."), bbox_inches=bbox, **kw)
    plt.close(fig)


def panel_label(ax, letter: str) -> None:
    ax.text(-0.12, 1.04, letter, transform=ax.transAxes, fontsize=14, fontweight="bold", va="bottom")


def finish_panel(ax, letter: str, xlabel: str, ylabel: str, title: str, integer_x: bool = False,
                 **legend) -> None:
    """Axis labels, title, legend (keyword arguments of ``ax.legend``) and the panel letter of one panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if integer_x:
        import matplotlib.pyplot as plt

        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    if ax.get_legend_handles_labels()[0]:  # an empty panel (nothing at equilibrium) has no legend
        ax.legend(**legend)
    panel_label(ax, letter)
