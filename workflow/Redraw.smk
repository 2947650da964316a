# The redraw workflow (issues 11 and 21): the study's analysis tables, summary and figures drawn again from the
# cached tables, never anything upstream of them (fetch, store, training, measurement, collection). It includes
# only the rules of workflow/rules/redraw.smk, so nothing else can run whatever changed, and it never looks at the
# WorldClim rasters (WORLDCLIM_DIR may be unset, moved away or corrupt).
#
#   snakemake -s workflow/Redraw.smk [--configfile <the run's preset>] [--forcerun figure]
#
# `make figures`, `make report` and `make reference-figures` run it. A missing cached table stops it with
# Snakemake's own missing-input error, after a hint naming the tables and a command that makes them; a corrupt
# one stops it before any job. Cached tables older than the upstream code, or made with another config, are
# reported, never recomputed (spectral_collapse.staleness).
import os
from pathlib import Path

from snakemake.utils import min_version

from spectral_collapse import redraw
from spectral_collapse.config import validate_in_place
from spectral_collapse.staleness import config_warnings, stale_code_warnings

min_version("9.0")


configfile: "config.yaml"


validate_in_place(config, os.path.join(workflow.basedir, "schemas/config.schema.yaml"))


include: "rules/common.smk"
include: "rules/redraw.smk"


rule all:
    default_target: True
    input:
        rules.figures.input,


# What the redraw draws from, checked before the DAG is built (cheap: existence, format signatures, file times).
if workflow.is_main_process:
    PRESETS = [os.path.relpath(path) for path in workflow.config_settings.configfiles]
    corrupt = redraw.corrupt_message(MODELS, ".", STORE_DESCRIPTION, VERIFIED, PRESETS)
    if corrupt:
        raise redraw.RedrawError(corrupt)
    hint = redraw.missing_hint(MODELS, ".", STORE_DESCRIPTION, VERIFIED, PRESETS)
    if hint:
        logger.error(hint)  # Snakemake's missing-input error follows
    else:
        logger.info(
            "Redraw only: drawing from the cached tables with the rules "
            f"{', '.join(redraw.REDRAW_RULES)}; nothing is fetched, trained, measured or collected."
        )
        # Upstream code: the scripts of every rule that is not part of this workflow.
        OWN_SCRIPTS = {Path(str(rule.script)).name for rule in workflow.rules if rule.script}
        UPSTREAM = [p for p in sorted(Path(workflow.basedir, "..", "scripts").resolve().glob("*.py"))
                    if p.name not in OWN_SCRIPTS and p.name not in redraw.OFF_PATH_SCRIPTS]
        CACHED = redraw.cached_inputs(MODELS, STORE_DESCRIPTION, VERIFIED)
        for warning in stale_code_warnings(UPSTREAM, CACHED) + config_warnings(
            config, MODELS, ".", lambda model: run_tables(model, "run.json")
        ):
            logger.warning(warning)
