# Stage 5a: tables from the cached run measurements (cheap; never retrains).


localrules:
    pca,
    collect_scan,
    analyse_model,
    latent_maps,
    summary,
    analysis,


rule pca:
    """PCA of the standardized training sample: lambda_k and lambda_k / V."""
    input:
        store=STORE,
    output:
        pca=PCA_TABLE,
    log:
        "results/logs/analysis/pca.log",
    benchmark:
        "results/benchmarks/analysis/pca.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=5,
        mem_mb=3000,
    script:
        "../../scripts/pca.py"


rule collect_scan:
    """One combined dataset of M_k^2(T), R_k(T), D~_K(T) over the scan for one model."""
    input:
        unpack(scan_tables),
    output:
        latents=f"{ANALYSIS_DIR}/scan_latents.parquet",
        pruning=f"{ANALYSIS_DIR}/scan_pruning.parquet",
        runs=f"{ANALYSIS_DIR}/scan_runs.parquet",
    log:
        "results/logs/analysis/{model}/collect_scan.log",
    benchmark:
        "results/benchmarks/analysis/{model}/collect_scan.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=5,
        mem_mb=2000,
    script:
        "../../scripts/collect_scan.py"


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


rule latent_maps:
    """Leading latent means mu_k(x) on every land cell, and their correlations with the 19 variables."""
    input:
        store=STORE,
        model=map_model,
    output:
        maps=f"{ANALYSIS_DIR}/latent_maps.nc",
        correlations=f"{ANALYSIS_DIR}/latent_correlations.parquet",
    params:
        n_latents=config["analysis"]["n_map_latents"],
    log:
        "results/logs/analysis/{model}/latent_maps.log",
    benchmark:
        "results/benchmarks/analysis/{model}/latent_maps.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=5,
        mem_mb=4000,
    script:
        "../../scripts/latent_maps.py"


rule summary:
    """results/summary.json, the study summary: every model's analysis, with checksums, config hash, versions."""
    input:
        analyses=expand(f"{ANALYSIS_DIR}/analysis.json", model=MODELS),
        pca=PCA_TABLE,
        verified=VERIFIED,
        store_report=STORE_REPORT,
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


rule analysis:
    """Plain-name target: every table and results/summary.json."""
    input:
        "results/summary.json",
        expand(f"{ANALYSIS_DIR}/latent_correlations.parquet", model=MODELS),
