# Stage 1-2: fetch (or locate) WorldClim 2.1, verify its 19 checksums, build the tiled Zarr store.


localrules:
    fetch_worldclim,
    build_store,
    data,


rule fetch_worldclim:
    """Locate the local copy or download the official archive; verify all 19 SHA-256 checksums."""
    input:
        local=worldclim_inputs,
    output:
        verified=VERIFIED,
    params:
        local_source=WORLDCLIM_LOCAL.path if WORLDCLIM_LOCAL is not None else None,
        url=config["data"]["url"],
        download_dir=config["data"]["download_dir"],
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


rule build_store:
    """Tile the rasters into a chunked Zarr store with land mask, cell areas, split and training sample."""
    input:
        verified=VERIFIED,
    output:
        store=directory(STORE),
        report=STORE_REPORT,
    params:
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
