# Stage 5b: seaborn figures from cached tables only (changing a figure never retrains).


localrules:
    figure,
    figures,


rule figure:
    """The five figures of docs/science.md section 5 for one model, as PNG and PDF (one job: the plotting
    libraries are imported once for all five)."""
    input:
        unpack(figure_inputs),
    output:
        cascade_png=report(f"{FIGURE_DIR}/cascade.png", caption="../report/cascade.rst", category="{model}", subcategory="cascade"),
        cascade_pdf=f"{FIGURE_DIR}/cascade.pdf",
        spectra_png=report(f"{FIGURE_DIR}/spectra.png", caption="../report/spectra.rst", category="{model}", subcategory="spectra"),
        spectra_pdf=f"{FIGURE_DIR}/spectra.pdf",
        meanfield_png=report(f"{FIGURE_DIR}/meanfield.png", caption="../report/meanfield.rst", category="{model}", subcategory="meanfield"),
        meanfield_pdf=f"{FIGURE_DIR}/meanfield.pdf",
        truncation_png=report(f"{FIGURE_DIR}/truncation.png", caption="../report/truncation.rst", category="{model}", subcategory="truncation"),
        truncation_pdf=f"{FIGURE_DIR}/truncation.pdf",
        maps_png=report(f"{FIGURE_DIR}/maps.png", caption="../report/maps.rst", category="{model}", subcategory="maps"),
        maps_pdf=f"{FIGURE_DIR}/maps.pdf",
    log:
        "results/logs/figures/{model}.log",
    benchmark:
        "results/benchmarks/figures/{model}.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=5,
        mem_mb=2000,
    script:
        "../../scripts/plot_figures.py"


rule figures:
    """Plain-name target: every figure and the study summary, redrawn from the cached tables (retrains nothing)."""
    input:
        figure_files(),
        "results/summary.json",
