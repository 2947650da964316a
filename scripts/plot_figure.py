"""Rule figure: draw one of the five figures (the `figure` wildcard) of one model from the cached tables
(PNG and PDF). Reads tables only; never retrains."""

from spectral_collapse.analysis.io import setup_logging
from spectral_collapse.plotting.render import render

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
figure = snakemake.wildcards.figure
log = setup_logging(snakemake.log[0], f"plot_{figure}")
try:
    render(figure, dict(snakemake.input.items()), snakemake.output.png, snakemake.output.pdf,
           snakemake.wildcards.model)
except Exception:
    log.exception("figure %s failed", figure)
    raise
