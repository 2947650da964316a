"""Rule figure: draw one of the five figures (the `figure` wildcard) of one model from the cached tables
(PNG and PDF). Reads tables only; never retrains."""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], f"plot_{snakemake.wildcards.figure}"):
    from spectral_collapse.plotting.render import render

    render(snakemake.wildcards.figure, dict(snakemake.input.items()), snakemake.output.png, snakemake.output.pdf,
           snakemake.wildcards.model)
