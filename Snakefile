# Posterior collapse as automatic spectral pruning: WorldClim 2.1 -> Zarr -> beta-VAE scan -> spectra.
# Default target: the whole study for the config (laptop preset: config.yaml).
# Presets: --configfile presets/ci.yaml | presets/paper.yaml. Profiles: profiles/default (used
# automatically), profiles/slurm (--workflow-profile profiles/slurm).
import os

from snakemake.utils import min_version

from spectral_collapse.config import validate_in_place

min_version("9.0")


configfile: "config.yaml"


# Every key checked, and every default filled in, from the one schema (workflow/schemas); numbers given
# as strings (`--config` nested values, YAML's `1e-3`) coerced; a bad value stops with one line naming
# the key and the fix (spectral_collapse.config).
validate_in_place(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# ---- BEGIN redraw-only runs (issue 11; workflow/rules/common.smk, spectral_collapse.redraw) ----------
# When only redraw targets are requested (`snakemake figures`, `make figures`, `make report`), every rule
# upstream of the cached tables (data, training, measurement, collect, PCA, maps) is removed before the
# DAG is built: they cannot run, whatever their code, params or mtimes say.
if REDRAW_ONLY:
    start_redraw_only(workflow)
# ---- END redraw-only runs (issue 11) ----------------------------------------------------------------
