"""Draw one of the five figures from its cached input files (used by scripts/plot_figures.py and the tests)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..paths import FIGURES  # noqa: F401  (the figure list has one owner; re-exported for the rule script)

log = logging.getLogger("figure")


def draw(figure: str, inputs: Mapping[str, str | Path], model: str):
    """The matplotlib Figure of `figure` for `model` from the named input files (figure_inputs in common.smk).

    Settings of the analysis (e.g. the active threshold) are read from the model's analysis.json, so a figure
    shows exactly what the analysis that wrote its tables used."""
    read = lambda name: pd.read_parquet(inputs[name])  # noqa: E731
    if figure == "maps":
        import xarray as xr

        from .maps import plot_maps

        with xr.open_dataset(inputs["maps"], engine="scipy") as maps:
            return plot_maps(maps.load(), read("correlations"), model)
    analysis = json.loads(Path(inputs["analysis"]).read_text())
    if figure == "cascade":
        from .cascade import plot_cascade

        return plot_cascade(read("latents"), read("runs"), read("spectra"), read("pca"), analysis, model)
    if figure == "spectra":
        from .spectra import plot_spectra

        return plot_spectra(read("spectra"), analysis, model)
    if figure == "meanfield":
        from .meanfield import plot_meanfield

        return plot_meanfield(read("latents"), read("runs"), read("spectra"), analysis, model)
    if figure == "truncation":
        from .truncation import plot_truncation

        return plot_truncation(read("pruning"), read("latents"), read("runs"), read("spectra"), read("pca"), analysis, model)
    raise ValueError(f"unknown figure {figure!r} (expected one of {FIGURES})")


def render(figure: str, inputs: Mapping[str, str | Path], png: str | Path, pdf: str | Path | None, model: str) -> None:
    from .style import save_figure

    start = time.perf_counter()
    fig = draw(figure, inputs, model)
    save_figure(fig, png, pdf)
    log.info("%s/%s drawn in %.2f s", model, figure, time.perf_counter() - start)
