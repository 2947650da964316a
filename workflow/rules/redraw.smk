# Stage 5b: the rules that draw from the cached tables (spectral_collapse.redraw.REDRAW_RULES): each model's
# analysis, the study summary and the seaborn figures. Changing any of them never retrains. These are the only
# rules of the redraw workflow (workflow/Redraw.smk: `make figures`, `make report`, `make reference-figures`);
# the main Snakefile includes them too.
from spectral_collapse.redraw import cached_inputs


localrules:
    analyse_model,
    summary,
    figure,
    figures,


rule analyse_model:
    """Utility spectrum, collapse thresholds, agreement scores, mean-field exponent, d_eff: the model's analysis."""
    input:
        latents=f"{ANALYSIS_DIR}/scan_latents.parquet",
        pruning=f"{ANALYSIS_DIR}/scan_pruning.parquet",
        runs=f"{ANALYSIS_DIR}/scan_runs.parquet",
        pca=PCA_TABLE,
    output:
        spectra=f"{ANALYSIS_DIR}/spectra.parquet",
        d_eff=f"{ANALYSIS_DIR}/d_eff.parquet",
        analysis=f"{ANALYSIS_DIR}/analysis.json",
    params:
        analysis=config["analysis"],
    log:
        "results/logs/analysis/{model}/analyse_model.log",
    benchmark:
        "results/benchmarks/analysis/{model}/analyse_model.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=5,
        mem_mb=2000,
    script:
        "../../scripts/analyse_model.py"


rule summary:
    """results/summary.json, the study summary: every model's analysis, with checksums, config hash, versions."""
    input:
        analyses=expand(f"{ANALYSIS_DIR}/analysis.json", model=MODELS),
        pca=PCA_TABLE,
        verified=VERIFIED,
        store_description=STORE_DESCRIPTION,
    output:
        summary=SUMMARY,
    params:
        config=config,
    log:
        "results/logs/analysis/summary.log",
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=2,
        mem_mb=1000,
    script:
        "../../scripts/summary.py"


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
        SUMMARY,
        # The cached tables all of it is drawn from, named here too: in the redraw workflow, where no rule makes
        # them, a missing one stops the run with Snakemake's own missing-input error even when every figure
        # exists (in the main workflow they are made upstream anyway).
        list(cached_inputs(MODELS, STORE_DESCRIPTION, VERIFIED)),
