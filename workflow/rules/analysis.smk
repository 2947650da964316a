# Stage 5a: the cached tables: the training sample's PCA, each model's scan collected from its runs' measurements,
# its latent maps. The tables drawn from them are in redraw.smk.


localrules:
    pca,
    collect_scan,
    latent_maps,
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


rule latent_maps:
    """Leading latent means mu_k(x) on every valid cell of a gridded source, and their correlations with its variables."""
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


rule analysis:
    """Plain-name target: every table and results/summary.json."""
    input:
        SUMMARY,
        expand(f"{ANALYSIS_DIR}/latent_correlations.parquet", model=MODELS),
