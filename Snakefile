# Posterior collapse as automatic spectral pruning: WorldClim 2.1 -> Zarr -> beta-VAE scan -> spectra.
# Default target: the whole study for the config (laptop preset: config.yaml). Redraw only (figures, summary,
# report from the cached tables; never trains): workflow/Redraw.smk (`make figures`).
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
include: "workflow/rules/spectroscopy.smk"
include: "workflow/rules/redraw.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# A corrupt (truncated) table is set aside before the DAG is built, so that this run remakes it (common.smk).
set_aside_corrupt_tables()
