# Stage 1-2: verify WorldClim 2.1 (19 pinned SHA-256 checksums), build the tiled Zarr store.
#
# Content, not path (issue 11). The data's identity is its 19 checksums: worldclim_verified.json holds
# them and nothing else, and no rule here has the rasters' location as an input or a param. The same
# files reached through another folder, a symlink, a cluster's shared filesystem, a zip or the download
# are the same data and rerun nothing. A changed file stops the workflow when it is parsed
# (verify_local_source, below), before any job starts. Where the rasters are is looked up at
# run time by the scripts (spectral_collapse.worldclim.locate_rasters).
import os

from spectral_collapse.worldclim import (pinned_checksums, record_is_current, resolve_local_source, source_available,
                                         verify_local_source)

# A local WorldClim copy (config data.worldclim_dir, else $WORLDCLIM_DIR), or None to download. Raises a
# ValueError naming the key or variable when the path does not exist. The redraw workflow (workflow/Redraw.smk)
# does not include this file: a redraw never reads the rasters, so it never looks.
WORLDCLIM_LOCAL = resolve_local_source(config["data"].get("worldclim_dir"), os.environ.get("WORLDCLIM_DIR"))

# The data's identity is its 19 pinned checksums, not its path. A configured local copy is verified here,
# when the workflow is parsed (19 files, ~55 MB: well under a second): a changed file stops the run with
# a checksum error naming it before any job starts, so nothing cached is touched; a good copy anywhere is
# the same data and reruns nothing (rules here have no path-valued input or param). Cluster job
# processes (not the main process) skip it: their jobs never read the rasters.
if WORLDCLIM_LOCAL is not None and workflow.is_main_process:
    verify_local_source(WORLDCLIM_LOCAL)

# The store is rebuilt (and so first deleted by Snakemake) only when the rasters can be had without a
# download or when there is no complete store: a shell without WORLDCLIM_DIR never costs a built store
# and everything trained on it (issue 23). Rule build_store is defined only then.
STORE_COMPLETE = os.path.isdir(STORE) and os.path.isfile(STORE_REPORT)
STORE_BUILDABLE = not STORE_COMPLETE or source_available(WORLDCLIM_LOCAL, config["data"]["download_dir"])
if workflow.is_main_process and not STORE_BUILDABLE:
    logger.info(
        f"{STORE} is kept as it is: no WorldClim source is available (WORLDCLIM_DIR and data.worldclim_dir "
        f"unset, nothing in {config['data']['download_dir']}), so the rule that rebuilds the store is not part "
        "of this run. Set WORLDCLIM_DIR for a changed build_store script to rebuild it."
    )


localrules:
    data,


# The fetch rule exists only while there is no current verified record (missing, or verified against
# other pins). Once the data is verified, nothing (a new path, an unset WORLDCLIM_DIR, no network, an
# edit of the fetch script) can rerun it: no download is attempted, the record is never deleted, and
# nothing downstream is invalidated. New pins (another WorldClim release) define it again.
if not record_is_current(VERIFIED):

    localrules:
        fetch_worldclim,

    rule fetch_worldclim:
        """Locate the local copy, an earlier download, or download the archive; verify all 19 checksums."""
        output:
            verified=VERIFIED,
        params:
            # The identity of the data, and the only param: the location is deliberately not one.
            sha256=pinned_checksums(),
        log:
            "results/logs/data/fetch_worldclim.log",
        benchmark:
            "results/benchmarks/data/fetch_worldclim.tsv"
        conda:
            "../../envs/study.yaml"
        resources:
            runtime=30,
            mem_mb=1000,
        script:
            "../../scripts/fetch_worldclim.py"


# Defined only when the rasters can be had without a download or there is no complete store yet
# (STORE_BUILDABLE, above): Snakemake deletes a job's outputs before the job runs, so a rebuild in a shell
# without WORLDCLIM_DIR (a touched build script after `git pull`) would delete the store, then fail.
if STORE_BUILDABLE:

    localrules:
        build_store,

    rule build_store:
        """Tile the rasters into a chunked Zarr store with land mask, cell areas, split and training sample."""
        input:
            verified=VERIFIED,
        output:
            store=directory(STORE),
            report=STORE_REPORT,
        params:
            # Store settings only; the rasters are found at run time and must match the verified checksums.
            store=config["store"],
        log:
            "results/logs/data/build_store.log",
        benchmark:
            "results/benchmarks/data/build_store.tsv"
        conda:
            "../../envs/study.yaml"
        resources:
            runtime=15,
            mem_mb=6000,
        script:
            "../../scripts/build_store.py"


rule data:
    """Plain-name target: the verified data and the Zarr store."""
    input:
        STORE_REPORT,
