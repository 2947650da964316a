"""Rule figure (maps): draw the maps figure of one model from the cached tables (PNG and PDF)."""

from spectral_collapse.analysis.io import setup_logging
from spectral_collapse.plotting.render import render

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
log = setup_logging(snakemake.log[0], "plot_maps")
try:
    render("maps", dict(snakemake.input.items()), snakemake.output.png, snakemake.output.pdf,
           snakemake.wildcards.model, float(snakemake.config["analysis"].get("active_threshold", 0.1)))
except Exception:
    log.exception("figure maps failed")
    raise
