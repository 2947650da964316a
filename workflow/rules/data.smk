# Stage 1-2: verify WorldClim 2.1 (19 pinned SHA-256 checksums), build the tiled Zarr store.
#
# Content, not path (issue 11). The data's identity is its 19 checksums: worldclim_verified.json holds
# them and nothing else, and no rule here has the rasters' location as an input or a param. The same
# files reached through another folder, a symlink, a cluster's shared filesystem, a zip or the download
# are the same data and rerun nothing. Where the rasters are is looked up, and their checksums verified, at run
# time by the rules that read them (spectral_collapse.worldclim.locate_rasters): a changed file stops the job that
# reads it before it writes anything. When the workflow is parsed, only the configured location is checked: a
# data.worldclim_dir or $WORLDCLIM_DIR naming a path that does not exist is a wrong setting, refused before any job
# with the key or variable named (no file is read and no rule depends on the answer).
#
# A raster stack or a table (data.source, issue 20) is the user's own data: its identity is the checksums of its
# files (rule hash_source), which are that rule's inputs, so a changed file is hashed again and the store rebuilt.
# Their paths are checked when the workflow is parsed, naming the config key.
from spectral_collapse.sources import source_paths
from spectral_collapse.worldclim import pinned_checksums, resolve_local_source

if SOURCE_KIND == "worldclim":
    resolve_local_source(config["data"].get("worldclim_dir"), os.environ.get("WORLDCLIM_DIR"))
# The files a raster or table source reads (none for WorldClim), listed once; a configured path that does not
# exist stops the parse here, naming its key.
SOURCE_FILES = source_paths(config["data"], REPO_ROOT)
# WorldClim's record is the store's input as ancient() (below); a user's source rebuilds its store when it changes.
VERIFIED_INPUT = ancient(VERIFIED) if SOURCE_KIND == "worldclim" else VERIFIED


localrules:
    fetch_worldclim,
    hash_source,
    build_store,
    data,


# Once verified, the record is the data's identity for everything after it: build_store reads it as ancient(), so
# a fetch that reruns (its script changed, or new pins) never reruns the store and what was trained on it (a new
# data release comes with new pins and is a new store: `--forcerun build_store`). Its output is update(): Snakemake
# never deletes the record before the job, and puts it back when the job fails (no network, no WORLDCLIM_DIR, a
# corrupt copy), so no failed fetch loses a verified record.
rule fetch_worldclim:
    """Locate the local copy, an earlier download, or download the archive; verify all 19 checksums."""
    output:
        verified=update(WORLDCLIM_VERIFIED),
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


rule hash_source:
    """A raster stack's or a table's files (data.source): their SHA-256 checksums, the data's identity."""
    input:
        files=SOURCE_FILES,
    output:
        verified=update(SOURCE_VERIFIED),
    log:
        "results/logs/data/{source_store}/hash_source.log",
    benchmark:
        "results/benchmarks/data/{source_store}/hash_source.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=10,
        mem_mb=500,
    script:
        "../../scripts/hash_source.py"


# The store and its description are update() outputs (issue 23, issue 21 item 2): Snakemake never deletes them
# before the job, backs them up and restores them when the job fails. A rebuild in a shell without WORLDCLIM_DIR
# (a touched build script after `git pull`) therefore fails naming WORLDCLIM_DIR and leaves the store and everything
# trained on it as they were; the build itself writes under a temporary name and renames when complete
# (spectral_collapse.provenance.atomic_path), and checks the rasters against the verified record before writing.
rule build_store:
    """Tile the source into a chunked Zarr store: valid-cell mask, cell areas (or a table's rows), split, training sample."""
    input:
        verified=VERIFIED_INPUT,
    output:
        store=update(directory(STORE)),
        description=update(STORE_DESCRIPTION),
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
        STORE_DESCRIPTION,
