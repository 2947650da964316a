# Shared helpers: the scan design, output paths and input functions (config validated in the Snakefile).
import os

from spectral_collapse.scan import (
    GROUP_PATTERN,
    MODEL_ID_PATTERN,
    ModelSpec,
    group_label,
    model_seeds,
    model_settings,
    model_points_per_job,
    model_specs,
    model_t_grid,
    scan_groups,
    training_settings,
)
from snakemake.logging import logger

from spectral_collapse.integrity import set_aside_corrupt
from spectral_collapse.paths import (ANALYSIS_DIR, ANALYSIS_ROOT, FIGURE_DIR, FIGURES, PCA_TABLE, PER_MODEL_CACHED,
                                     RUN_DIR, RUNS_ROOT, SOURCE_VERIFIED, SUMMARY)
from spectral_collapse.paths import VERIFIED as WORLDCLIM_VERIFIED
from spectral_collapse.sources import n_variables
from spectral_collapse.storepath import store_paths


MODELS = [spec.model_id for spec in model_specs(config)]
# Every training job trains one group of scan points (models.<family>.points_per_job, else
# scan.points_per_job of them; default one): {model id: {group label: [T values]}}, in grid order.
GROUPS = {
    model: {
        group_label(Ts): Ts
        for Ts in scan_groups(
            model_t_grid(config, ModelSpec.from_id(model).family),
            model_points_per_job(config, ModelSpec.from_id(model).family),
        )
    }
    for model in MODELS
}

# Each set of store settings has its own store (spectral_collapse.storepath): switching presets never
# rebuilds or deletes another preset's store.
STORE_PATHS = store_paths(config["store"], data=config["data"])
STORE, STORE_DESCRIPTION = STORE_PATHS.store, STORE_PATHS.description
# The data's verified record (its checksums) for the configured source (data.source): rule fetch_worldclim's for
# WorldClim 2.1, rule hash_source's for a raster stack or a table (issue 20).
SOURCE_KIND = config["data"]["source"]
# The repository root: a source's relative paths are taken from it (docs/own-data.md), whichever Snakefile includes
# this file and whatever the working directory (-d).
REPO_ROOT = os.path.normpath(os.path.join(str(workflow.current_basedir), "..", ".."))
# models.linear.latents null (the schema's default): one latent per input variable, filled in here so that every
# job's params and record hold the number (WorldClim: 19, as before issue 20).
if config["models"]["linear"]["latents"] is None:
    config["models"]["linear"]["latents"] = n_variables(config["data"], REPO_ROOT, STORE_DESCRIPTION)
VERIFIED = STORE_PATHS.verified


wildcard_constraints:
    model=MODEL_ID_PATTERN,
    source_store=r"(raster|table)-[0-9a-f]{10}",
    group=GROUP_PATTERN,
    seed=r"[0-9]+",


def run_tables(model, table):
    """One table of every training job (group) of one model over the scan and seeds."""
    return expand(f"{RUN_DIR}/{table}", model=model, group=list(GROUPS[model]), seed=model_seeds(config, model))


def scan_tables(wildcards):
    """Named inputs of collect_scan: every job's latents, pruning and run tables for one model."""
    return {
        "latents": run_tables(wildcards.model, "latents.parquet"),
        "pruning": run_tables(wildcards.model, "pruning.parquet"),
        "runs": run_tables(wildcards.model, "run.json"),
    }


def group_T(wildcards):
    """The scan points (exact grid values) a training job trains."""
    return GROUPS[wildcards.model][wildcards.group]


def measured_splits(wildcards):
    """The splits a trained group is measured on (models.<family>.measured_splits)."""
    return config["models"][ModelSpec.from_id(wildcards.model).family]["measured_splits"]


def job_settings(wildcards):
    """Everything a training job needs to know about its model (scan.model_settings)."""
    return model_settings(config, wildcards.model)


# ---- BEGIN resource requests (issue 22; spectral_collapse.cost, cost_model.yaml) -------------------------
# A training job's runtime and memory come from the cost model entry of the device it runs on: `gpu` when the
# profile's set-resources give the train rule a GPU (profiles/slurm), else `cpu` (profiles/default). The gpu
# entry is a stated default until `make gpu-check` writes results/benchmarks/gpu_cost.json.
from types import SimpleNamespace

from spectral_collapse import cost

TRAIN_DEVICE = cost.requested_device(workflow.resource_settings.overwrite_resources.get("train"))
COST_MODEL = cost.load_model(".")  # the working directory: where `make gpu-check` writes its measurement
TRAIN_COST = COST_MODEL[TRAIN_DEVICE]


def train_runtime(wildcards, attempt):
    """Minutes (sbatch -t): the cost model of the job's device for its model and group size, every member
    training to the budget; doubled, tripled ... per retry (a job that ran out of time asks for more)."""
    return cost.train_runtime_min(TRAIN_COST, config, wildcards.model, len(group_T(wildcards)), attempt)


def train_mem_mb(wildcards, attempt):
    """Host memory in MB from the cost model of the job's device (CPU: 4 GB + 100 MB per member; GPU: 4 GB +
    25 MB per member, the activations living on the GPU), times the attempt."""
    return cost.train_mem_mb(TRAIN_COST, len(group_T(wildcards)), attempt)


def measure_mem_mb(wildcards, attempt):
    """The measurement runs on a CPU node (its own job): the CPU entry's memory, times the attempt."""
    return cost.train_mem_mb(COST_MODEL["cpu"], len(group_T(wildcards)), attempt)


def measure_runtime(wildcards, attempt):
    """Minutes: 10 plus 2 per member (each member decodes every split L + 1 times, plus once per active latent
    for the ablations), plus the stability probe costed like training on a CPU core (cost model's cpu entry) at
    the study's costliest model: one request for every measurement job of a group size (an array job gives all
    its tasks the first task's request)."""
    check = config["analysis"]["stability_check"]
    members = len(group_T(wildcards))
    probe = 0.0
    if check["enabled"]:
        entry = COST_MODEL["cpu"]
        ms = entry["update_ms"]["base"] + members * entry["update_ms"]["per_member"]
        worst = max(cost.model_factor(entry["factors"]["member"], model) for model in MODELS)
        probe = entry["safety"] * int(check["updates"]) * ms * worst / 6e4
    return int(10 + 2 * members + probe + 0.999) * attempt


def log_booking():
    """Print what the run books (attempt 1) for every training and measurement job of the study."""
    threads = workflow.resource_settings.overwrite_threads
    gpus = 1 if TRAIN_DEVICE == "gpu" else 0
    jobs = []
    for model in MODELS:
        for group in GROUPS[model]:
            wc = SimpleNamespace(model=model, group=group)
            for _ in model_seeds(config, model):
                jobs.append({"rule": "train", "runtime_min": train_runtime(wc, 1), "gpus": gpus,
                             "threads": _threads(threads, "train")})
                jobs.append({"rule": "measure", "runtime_min": measure_runtime(wc, 1), "gpus": 0,
                             "threads": _threads(threads, "measure")})
    for line in cost.booking_lines(cost.booking(jobs, TRAIN_DEVICE), TRAIN_COST["origin"]):
        logger.info(line)


def _threads(overwrite, rule):
    value = overwrite.get(rule, 1)
    return int(getattr(value, "value", value) or 1)


# ---- END resource requests (issue 22) --------------------------------------------------------------------


def map_model(wildcards):
    """The trained model drawn in the world maps: the job holding the coldest scan point, first seed."""
    coldest = list(GROUPS[wildcards.model])[-1]
    return f"{RUNS_ROOT}/{wildcards.model}/{coldest}/seed{model_seeds(config, wildcards.model)[0]}/model.pt"


def model_files(wildcards):
    """Every trained model.pt of one model: all its training jobs (groups) and seeds (rule latent_variables)."""
    return run_tables(wildcards.model, "model.pt")


def figure_inputs(wildcards):
    """Cached tables the figures of one model are drawn from."""
    base = f"{ANALYSIS_ROOT}/{wildcards.model}"
    return {
        "latents": f"{base}/scan_latents.parquet",
        "pruning": f"{base}/scan_pruning.parquet",
        "runs": f"{base}/scan_runs.parquet",
        "spectra": f"{base}/spectra.parquet",
        "d_eff": f"{base}/d_eff.parquet",
        "analysis": f"{base}/analysis.json",
        "pca": PCA_TABLE,
        "maps": f"{base}/latent_maps.nc",
        "correlations": f"{base}/latent_correlations.parquet",
    }


def figure_files():
    return expand(f"{FIGURE_DIR}/{{figure}}.{{ext}}", model=MODELS, figure=FIGURES, ext=["png", "pdf"])


def intermediate_tables():
    """Every table between the store and the figures. Targets of the full run, so that a missing or set-aside
    (corrupt) one is remade: Snakemake otherwise remakes a missing file only when a consumer must rerun."""
    out = [PCA_TABLE]
    for model in MODELS:
        for table in ("latents.parquet", "pruning.parquet", "run.json"):
            out += run_tables(model, table)
        out += [f"{ANALYSIS_ROOT}/{model}/{name}" for name in (*PER_MODEL_CACHED, "spectra.parquet", "d_eff.parquet",
                                                               "analysis.json")]
    return out


def all_targets():
    from spectral_collapse.paths import (COLLINEARITY, LATENT_VARIABLES, SPECTROSCOPY_FIGURE, SPECTROSCOPY_JSON,
                                         SPECTROSCOPY_TABLE)

    spectroscopy = [COLLINEARITY, SPECTROSCOPY_JSON, SPECTROSCOPY_TABLE,
                    *expand(SPECTROSCOPY_FIGURE, model=MODELS), *expand(LATENT_VARIABLES, model=MODELS)]
    return [STORE_DESCRIPTION, SUMMARY, *figure_files(), *intermediate_tables(), *spectroscopy]


def set_aside_corrupt_tables():
    """Rename every corrupt (truncated) table of the full run to <name>.corrupt before the DAG is built, so that
    this run remakes it (all_targets lists every table; spectral_collapse.integrity). Snakemake decides what to run
    from the files present before any job starts, so this cannot be a rule. Not while another snakemake holds this
    folder's lock (its jobs may be writing a table right now; this run then stops at the lock anyway). A dry run
    sets them aside too (a rename: nothing is deleted), so that it shows the jobs that remake them."""
    if not workflow.is_main_process:
        return
    if os.path.isdir(".snakemake/locks") and os.listdir(".snakemake/locks"):
        return
    try:
        for line in set_aside_corrupt(intermediate_tables()):
            logger.warning(f"Corrupt table: {line}")
    except PermissionError as exc:  # a read-only results/: the job that needs the table reports it
        logger.warning(f"Could not set a corrupt table aside: {exc.filename}: {exc.strerror}")
