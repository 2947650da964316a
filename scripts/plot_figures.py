"""Rule figure: draw the five figures of one model from its cached tables (PNG and PDF each). Reads tables
only; never retrains."""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "figure") as log:
    from spectral_collapse.plotting.render import FIGURES, render

    for figure in FIGURES:
        render(figure, dict(snakemake.input.items()), snakemake.output[f"{figure}_png"],
               snakemake.output[f"{figure}_pdf"], snakemake.wildcards.model)
