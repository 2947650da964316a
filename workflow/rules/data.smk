# Stage 1-2: verify WorldClim 2.1 (19 pinned SHA-256 checksums), build the tiled Zarr store.
#
# Content, not path (issue 11). The data's identity is its 19 checksums: worldclim_verified.json holds
# them and nothing else, and no rule here has the rasters' location as an input or a param. The same
# files reached through another folder, a symlink, a cluster's shared filesystem, a zip or the download
# are the same data and rerun nothing. A changed file stops the workflow when it is parsed
# (verify_local_source in common.smk), before any job starts. Where the rasters are is looked up at
# run time by the scripts (spectral_collapse.worldclim.locate_rasters).
from spectral_collapse.worldclim import pinned_checksums, record_is_current


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
# (STORE_BUILDABLE, common.smk): Snakemake deletes a job's outputs before the job runs, so a rebuild in a shell
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
