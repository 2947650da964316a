# Stage 5b: seaborn figures from cached tables only (changing a figure never retrains).


localrules:
    figure,
    figures,


rule figure:
    """One of the five figures of docs/science.md section 5 for one model, as PNG and PDF."""
    input:
        unpack(figure_inputs),
    output:
        png=report(
            f"{FIGURE_DIR}/{{figure}}.png",
            # Snakemake does not expand wildcards in a caption path (9.27): one caption template that
            # includes workflow/report/<figure>.rst by the job's wildcard.
            caption="../report/figure.rst",
            category="{model}",
            subcategory="{figure}",
        ),
        pdf=f"{FIGURE_DIR}/{{figure}}.pdf",
    log:
        "results/logs/figures/{model}/{figure}.log",
    benchmark:
        "results/benchmarks/figures/{model}/{figure}.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=5,
        mem_mb=2000,
    script:
        "../../scripts/plot_figure.py"


rule figures:
    """Plain-name target: every figure and the study summary, redrawn from the cached tables (retrains nothing)."""
    input:
        figure_files(),
        "results/summary.json",
