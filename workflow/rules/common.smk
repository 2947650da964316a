# Shared helpers: config validation, the scan design, output paths and input functions.
import os
from pathlib import Path

from snakemake.utils import validate

from spectral_collapse.scan import (
    MODEL_ID_PATTERN,
    T_LABEL_PATTERN,
    ModelSpec,
    model_specs,
    t_chunks,
    t_grid,
    t_label,
    training_settings,
)
from spectral_collapse.worldclim import resolve_local_source


validate(config, schema="../schemas/config.schema.yaml")

T_VALUES = t_grid(config["scan"])
MODELS = [spec.model_id for spec in model_specs(config)]
SEEDS = [int(s) for s in config["scan"]["seeds"]]
POINTS_PER_JOB = int(config["scan"]["points_per_job"])
# A local WorldClim copy (config data.worldclim_dir, else $WORLDCLIM_DIR), or None to download.
# Raises a ValueError naming the key or variable when the path does not exist.
WORLDCLIM_LOCAL = resolve_local_source(config["data"].get("worldclim_dir"), os.environ.get("WORLDCLIM_DIR"))

STORE = "results/data/worldclim.zarr"
STORE_REPORT = "results/data/worldclim_store.json"
VERIFIED = "results/data/worldclim_verified.json"
RUN_DIR = "results/runs/{model}/T{T}/seed{seed}"
ENSEMBLE_DIR = "results/ensembles/{model}/seed{seed}/chunk{chunk}"
ANALYSIS_DIR = "results/analysis/{model}"
FIGURE_DIR = "results/figures/{model}"
FIGURES = ["cascade", "spectra", "meanfield", "truncation", "maps"]


wildcard_constraints:
    model=MODEL_ID_PATTERN,
    T=T_LABEL_PATTERN,
    seed=r"[0-9]+",
    chunk=r"[0-9]{3}",
    figure="|".join(FIGURES),
    ext="png|pdf",


def run_tables(model, table="latents.parquet"):
    """Per-run measurement tables of one model over the scan and seeds.

    One directory per scan point by default; with scan.points_per_job > 1 one directory per
    vectorized chunk holding several scan points (same table schema, several T values).
    """
    labels = [t_label(T) for T in T_VALUES]
    if POINTS_PER_JOB == 1:
        return expand(f"{RUN_DIR}/{table}", model=model, T=labels, seed=SEEDS)
    chunks = [f"{i:03d}" for i in range(len(t_chunks(T_VALUES, POINTS_PER_JOB)))]
    return expand(f"{ENSEMBLE_DIR}/{table}", model=model, chunk=chunks, seed=SEEDS)


def scan_tables(wildcards):
    """Named inputs of collect_scan: every run's latents, pruning and run tables for one model."""
    return {
        "latents": run_tables(wildcards.model, "latents.parquet"),
        "pruning": run_tables(wildcards.model, "pruning.parquet"),
        "runs": run_tables(wildcards.model, "run.json"),
    }


def chunk_T(wildcards):
    """The scan points of one vectorized chunk, for the ensemble job's params."""
    return t_chunks(T_VALUES, POINTS_PER_JOB)[int(wildcards.chunk)]


def model_settings(wildcards):
    """Everything a training job needs to know about its model, from config and wildcards."""
    spec = ModelSpec.from_id(wildcards.model)
    return {
        "family": spec.family,
        "depth": spec.depth,
        "model": dict(config["models"].get(spec.family, {})),
        "decoder": dict(config["decoder"]),
        "training": training_settings(config, spec.family),
    }


def train_runtime(wildcards, attempt):
    """Runtime estimate in minutes: about 5 ms per update on a CPU core, doubled per retry."""
    spec = ModelSpec.from_id(wildcards.model)
    updates = training_settings(config, spec.family)["max_updates"]
    return int(10 + updates * 5e-3 / 60 * 2) * attempt


def train_mem_mb(wildcards, attempt):
    return 4000 * attempt


def map_model(wildcards):
    """The trained model drawn in the world maps: the coldest scan point (most latents active), seed 0."""
    if POINTS_PER_JOB == 1:
        return f"results/runs/{wildcards.model}/T{t_label(min(T_VALUES))}/seed{SEEDS[0]}/model.pt"
    last = len(t_chunks(T_VALUES, POINTS_PER_JOB)) - 1
    return f"results/ensembles/{wildcards.model}/seed{SEEDS[0]}/chunk{last:03d}/model.pt"


def figure_inputs(wildcards):
    """Cached tables a figure is drawn from (all five figures read the same small set)."""
    base = f"results/analysis/{wildcards.model}"
    inputs = {
        "latents": f"{base}/scan_latents.parquet",
        "pruning": f"{base}/scan_pruning.parquet",
        "runs": f"{base}/scan_runs.parquet",
        "spectra": f"{base}/spectra.parquet",
        "d_eff": f"{base}/d_eff.parquet",
        "summary": f"{base}/summary.json",
        "pca": "results/analysis/pca.parquet",
    }
    if wildcards.figure == "maps":
        inputs["maps"] = f"{base}/latent_maps.nc"
        inputs["correlations"] = f"{base}/latent_correlations.parquet"
    return inputs


def figure_files():
    return expand(f"{FIGURE_DIR}/{{figure}}.{{ext}}", model=MODELS, figure=FIGURES, ext=["png", "pdf"])


def all_targets():
    return [STORE_REPORT, "results/summary.json", *figure_files()]


# ---- BEGIN content identity and redraw-only runs (issue 11) ------------------------------------------
# The data's identity is its 19 pinned checksums, not its path. A configured local copy is verified here,
# when the workflow is parsed (19 files, ~55 MB: well under a second): a changed file stops the run with
# a checksum error naming it before any job starts, so nothing cached is touched; a good copy anywhere is
# the same data and reruns nothing (rules in data.smk have no path-valued input or param). Cluster job
# processes (not the main process) skip it: their jobs never read the rasters.
from snakemake.logging import logger

from spectral_collapse import redraw
from spectral_collapse.worldclim import verify_local_source

if WORLDCLIM_LOCAL is not None and workflow.is_main_process:
    verify_local_source(WORLDCLIM_LOCAL)

# `snakemake figures`, `make figures`, `make report` (spectral_collapse.redraw): only redraw targets asked
# for, so the Snakefile keeps only the redraw rules (start_redraw_only, called at its end).
REDRAW_ONLY = workflow.is_main_process and redraw.is_redraw_only(redraw.parse_request())


def start_redraw_only(workflow):
    """Check the cached inputs (stop naming the missing ones), drop every upstream rule, warn if stale."""
    dropped, warnings = redraw.start(
        workflow, config, MODELS, run_records=lambda model: run_tables(model, "run.json")
    )
    logger.info(
        f"Redraw only: drawing from the cached tables; {len(dropped)} upstream rules are not part of this "
        "run, so nothing is fetched, trained, measured or collected."
    )
    for warning in warnings:
        logger.warning(warning)


# ---- END content identity and redraw-only runs (issue 11) --------------------------------------------
