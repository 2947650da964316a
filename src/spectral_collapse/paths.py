"""Every path pattern of the workflow's outputs, and the list of tables a redraw reads from the cache: one owner
(issue 21 item 3). The rules (workflow/rules/*.smk), the redraw check (``redraw``) and the reference bundle
(``bundle``) read them from here. Paths are relative to the workflow's working directory; patterns hold
Snakemake wildcards ``{model}``, ``{group}``, ``{seed}``."""

from __future__ import annotations

RESULTS = "results"
DATA_ROOT = "results/data"  # the verified record and the stores (storepath: one folder per set of store settings)
VERIFIED = DATA_ROOT + "/worldclim_verified.json"  # the data's checksums, as verified (rule fetch_worldclim)
SOURCE_STORE = "{source_store}"  # the folder of a raster or table source's store: <source>-<key> (storepath)
SOURCE_VERIFIED = DATA_ROOT + "/" + SOURCE_STORE + "/source_verified.json"  # its files' checksums (rule hash_source)
RUNS_ROOT = "results/runs"
RUN_DIR = RUNS_ROOT + "/{model}/{group}/seed{seed}"  # one training job: model.pt, train.json; its measurement
ANALYSIS_ROOT = "results/analysis"
ANALYSIS_DIR = ANALYSIS_ROOT + "/{model}"
PCA_TABLE = ANALYSIS_ROOT + "/pca.parquet"
SUMMARY = "results/summary.json"  # the study summary
FIGURE_DIR = "results/figures/{model}"
FIGURES = ("cascade", "spectra", "meanfield", "truncation", "maps")
BENCHMARKS_ROOT = "results/benchmarks"  # Snakemake's benchmark of every job: results/benchmarks/<rule>/...

# What a redraw reads from the cache, per model (rules collect_scan and latent_maps), beside PCA_TABLE, VERIFIED
# and the store's description (storepath).
SCAN_RUNS = "scan_runs.parquet"  # one row per scan point: its T, seed, convergence and stability
PER_MODEL_CACHED: tuple[str, ...] = (
    "scan_latents.parquet", "scan_pruning.parquet", SCAN_RUNS,  # rule collect_scan
    "latent_maps.nc", "latent_correlations.parquet",  # rule latent_maps
)

# Latent spectroscopy (issue 20): which input variables each active latent carries, against PCA and a VIF step.
# Made from the trained models (rule latent_variables), so not in PER_MODEL_CACHED: a redraw never needs them.
LATENT_VARIABLES = ANALYSIS_DIR + "/latent_variables.parquet"  # r of mu_k(x) with every input, per active latent
COLLINEARITY = ANALYSIS_ROOT + "/collinearity.json"  # VIF step and PCA components for a variance share (train)
SPECTROSCOPY_DIR = "results/spectroscopy"
SPECTROSCOPY_JSON = SPECTROSCOPY_DIR + "/spectroscopy.json"
SPECTROSCOPY_TABLE = SPECTROSCOPY_DIR + "/spectroscopy.csv"
SPECTROSCOPY_FIGURE = SPECTROSCOPY_DIR + "/{model}_latent_variables.png"

