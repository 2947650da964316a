"""Figures never draw a point away from equilibrium as fitted (issue 18 item 2): synthetic linear-oracle
tables (no training, no rasters), markers inspected through matplotlib's artists, not images."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from spectral_collapse.analysis.model_analysis import analyse_model
from spectral_collapse.analysis.synthetic import linear_scan_tables, pca_table
from spectral_collapse.config import load_config
from spectral_collapse.plotting.cascade import plot_cascade
from spectral_collapse.plotting.meanfield import plot_meanfield
from spectral_collapse.plotting.spectra import plot_spectra
from spectral_collapse.plotting.truncation import plot_truncation
from spectral_collapse.scan import t_grid

T_K = np.array([0.5, 0.2, 0.08, 0.03, 0.01])
T_GRID = t_grid({"max": 1.0, "min": 1e-3, "per_decade": 4})
CFG = load_config()["analysis"]
NOTE = "no scan point reached equilibrium"


def _tables(unconverged: dict):
    lat, prn, runs = linear_scan_tables(T_K, T_GRID, seeds=(0,), unconverged=unconverged)
    runs = pd.DataFrame(runs).drop(columns="totals")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the analysis' own warning when nothing is at equilibrium
        spectra, _, summary = analyse_model(lat, prn, runs, pca_table(T_K), CFG, "linear")
    return lat, prn, runs, spectra, summary


def _markers(ax) -> list[tuple[np.ndarray, bool]]:
    """(offsets, filled) of every scatter collection on the axes."""
    from matplotlib.collections import PathCollection

    out = []
    for c in ax.collections:
        if not isinstance(c, PathCollection):  # colourbars, spans, meshes: not data markers
            continue
        offsets = np.asarray(c.get_offsets())
        if len(offsets):
            fc = np.asarray(c.get_facecolors())
            out.append((offsets, bool(len(fc)) and bool((fc[:, 3] > 0).any())))
    return out


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_budget_hit_point_is_hollow_in_the_cascade():
    """One run stopped at its budget (status 'budget'): its markers hollow, the runs at equilibrium filled."""
    bad_T = T_GRID[3]
    lat, _, runs, spectra, summary = _tables({(0, bad_T): 0.5})
    fig = plot_cascade(lat, runs, spectra, pca_table(T_K), summary, "linear")
    markers = _markers(fig.axes[0])
    at_bad = [filled for xy, filled in markers if np.isclose(xy[:, 0], bad_T).any()]
    elsewhere = [filled for xy, filled in markers if not np.isclose(xy[:, 0], bad_T).any()]
    plt.close(fig)
    assert at_bad and not any(at_bad)
    assert elsewhere and all(elsewhere)


@pytest.mark.parametrize("figure", ["cascade", "spectra", "meanfield", "truncation"])
def test_nothing_at_equilibrium_is_all_hollow_and_said_on_the_figure(figure):
    """Every run hit its budget: no marker is filled (the analysis' 'fit on all points' fallback never
    reaches the figures) and the figure itself says that no point reached equilibrium."""
    lat, prn, runs, spectra, summary = _tables({(0, T): 0.9 for T in T_GRID})
    pca = pca_table(T_K)
    draw = {"cascade": lambda: plot_cascade(lat, runs, spectra, pca, summary, "linear"),
            "spectra": lambda: plot_spectra(spectra, summary, "linear"),
            "meanfield": lambda: plot_meanfield(lat, runs, spectra, summary, "linear"),
            "truncation": lambda: plot_truncation(prn, lat, runs, spectra, pca, summary, "linear")}[figure]
    fig = draw()
    filled = [filled for ax in fig.axes for _, filled in _markers(ax) if filled]
    lines_filled = [ln for ax in fig.axes for ln in ax.get_lines()
                    if ln.get_marker() not in (None, "None", "", " ") and ln.get_markerfacecolor() != "none"
                    and len(ln.get_xdata()) and ln.get_label().startswith("linear")]
    text = _texts(fig)
    plt.close(fig)
    assert not filled
    assert not lines_filled
    assert NOTE in text
    assert "R^2$ =" not in text  # no agreement numbers computed from runs away from equilibrium


def test_point_failing_the_stability_check_is_hollow_in_the_cascade():
    """A converged, settled run whose collapsed latents did not relax back (runs' `stable` False) is not at
    equilibrium: its markers hollow, the others filled."""
    bad_T = T_GRID[5]
    lat, prn, runs = linear_scan_tables(T_K, T_GRID, seeds=(0,))
    runs = pd.DataFrame(runs).drop(columns="totals")
    runs["stable"] = ~np.isclose(runs["T"].to_numpy(float), bad_T)
    spectra, _, summary = analyse_model(lat, prn, runs, pca_table(T_K), CFG, "linear")
    fig = plot_cascade(lat, runs, spectra, pca_table(T_K), summary, "linear")
    markers = _markers(fig.axes[0])
    at_bad = [filled for xy, filled in markers if np.isclose(xy[:, 0], bad_T).any()]
    elsewhere = [filled for xy, filled in markers if not np.isclose(xy[:, 0], bad_T).any()]
    plt.close(fig)
    assert summary["runs"]["unstable"] == 1
    assert at_bad and not any(at_bad)
    assert elsewhere and all(elsewhere)
