# Stage 5c: latent spectroscopy (issue 20). Which input variables each active latent carries (from the trained
# models, test split), and per tolerance eps the model's d_eff and its leading latents beside PCA's d_eff, the PCA
# components for a variance share and a VIF step (training split). Not part of the redraw workflow: the
# latent_variables tables are made from the trained models, which the reference bundle does not ship.
from spectral_collapse.paths import (COLLINEARITY, LATENT_VARIABLES, SPECTROSCOPY_FIGURE, SPECTROSCOPY_JSON,
                                     SPECTROSCOPY_TABLE)


localrules:
    latent_variables,
    collinearity,
    spectroscopy,


rule latent_variables:
    """Weighted Pearson r of every active latent's posterior mean with every input variable (test split), at
    every scan point of one model at equilibrium."""
    input:
        store=STORE,
        models=model_files,
        latents=f"{ANALYSIS_DIR}/scan_latents.parquet",
        runs=f"{ANALYSIS_DIR}/scan_runs.parquet",
    output:
        variables=LATENT_VARIABLES,
    params:
        max_drift=config["analysis"]["max_m2_drift"],
    log:
        "results/logs/analysis/{model}/latent_variables.log",
    benchmark:
        "results/benchmarks/analysis/{model}/latent_variables.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=20,
        mem_mb=4000,
    script:
        "../../scripts/latent_variables.py"


rule collinearity:
    """The VIF step (usdm vifstep) and the PCA components holding a share of the variance, training sample."""
    input:
        store=STORE,
        pca=PCA_TABLE,
    output:
        collinearity=COLLINEARITY,
    params:
        vif_threshold=config["analysis"]["vif_threshold"],
        share=config["analysis"]["pca_variance_share"],
    log:
        "results/logs/analysis/collinearity.log",
    benchmark:
        "results/benchmarks/analysis/collinearity.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=10,
        mem_mb=3000,
    script:
        "../../scripts/collinearity.py"


rule spectroscopy:
    """Per model and eps: d_eff and what the leading latents carry, beside PCA and the VIF step (table, JSON,
    one heatmap per model), from the cached tables."""
    input:
        # each model's analysis.json (its d_eff, as results/summary.json repeats it), not summary.json: the summary
        # also reruns for a new store description or data record, which change nothing here
        analyses=expand(f"{ANALYSIS_DIR}/analysis.json", model=MODELS),
        collinearity=COLLINEARITY,
        variables=expand(LATENT_VARIABLES, model=MODELS),
        latents=expand(f"{ANALYSIS_DIR}/scan_latents.parquet", model=MODELS),
        pruning=expand(f"{ANALYSIS_DIR}/scan_pruning.parquet", model=MODELS),
        runs=expand(f"{ANALYSIS_DIR}/scan_runs.parquet", model=MODELS),
    output:
        record=SPECTROSCOPY_JSON,
        table=report(SPECTROSCOPY_TABLE, caption="../report/spectroscopy_table.rst", category="Spectroscopy",
                     subcategory="table"),
        figures=report(expand(SPECTROSCOPY_FIGURE, model=MODELS), caption="../report/spectroscopy.rst",
                       category="Spectroscopy", subcategory="latent variables"),
    params:
        models=MODELS,
        settings={key: config["analysis"][key] for key in ("d_eff_eps", "max_m2_drift", "active_threshold",
                                                          "n_carried_variables", "vif_threshold",
                                                          "pca_variance_share")},
    log:
        "results/logs/analysis/spectroscopy.log",
    benchmark:
        "results/benchmarks/analysis/spectroscopy.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=5,
        mem_mb=2000,
    script:
        "../../scripts/spectroscopy.py"
