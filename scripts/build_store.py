"""Rule build_store: tile the verified source into the Zarr store and write its JSON description.

Thin wrapper around spectral_collapse.store (layout: docs/contracts.md section 2). WorldClim 2.1's rasters are
found at run time (spectral_collapse.worldclim.locate_rasters: the configured local copy, else the earlier
download in data.download_dir, else a download), not through a Snakemake param: their location is not part of
the data's identity, their 19 checksums are, and they must equal the verified record's. A raster stack or a
table (data.source) is read from its configured path; its files must equal rule hash_source's record.
"""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "build_store") as log:
    import json
    import os

    import time
    from pathlib import Path
    from spectral_collapse.provenance import write_json
    from spectral_collapse.scan import largest_batch_size
    from spectral_collapse.sources import SourceError, source_checksums, source_kind
    from spectral_collapse.store import build_source_store, build_store
    from spectral_collapse.worldclim import ENV_VAR, WorldClimError, locate_rasters, resolve_local_source

    start = time.perf_counter()
    verified = json.loads(Path(snakemake.input.verified).read_text())
    data = snakemake.config["data"]
    settings = dict(snakemake.params.store)
    kind = source_kind(data)
    if kind == "worldclim":
        local = resolve_local_source(data.get("worldclim_dir"), os.environ.get(ENV_VAR))
        folder, info, files = locate_rasters(local, data["url"], data["download_dir"])
        if files != verified["files"]:
            raise WorldClimError(f"the rasters in {folder} are not the verified data ({snakemake.input.verified})")
        log.info("building %s from %s (%s: %s) with %s", snakemake.output.store, folder, info["source"],
                 info["origin"], settings)
        description = build_store(folder, snakemake.output.store, settings, sha256=files)
        description["raster_source"] = {**info, "raster_dir": str(folder)}  # provenance only, not identity
    else:
        root = snakemake.scriptdir + "/.."
        files = source_checksums(data, root)
        if files != verified["files"]:
            raise SourceError(f"the {kind} source's files changed since they were hashed "
                              f"({snakemake.input.verified}); rerun the workflow to hash them again.")
        log.info("building %s from the %s source %s with %s", snakemake.output.store, kind, data[kind]["path"],
                 settings)
        description = build_source_store(data, root, snakemake.output.store, settings,
                                         largest_batch_size(snakemake.config), sha256=files)
        description["raster_source"] = {"source": kind, "origin": str(data[kind]["path"])}
    description["store"] = str(snakemake.output.store)
    description["sha256"] = files
    write_json(snakemake.output.description, description)
    log.info("n_blocks=%d blocks=%s cells=%s V=%.6f in %.1f s", description["n_blocks"], description["blocks"],
             description["cells"], description["V"], time.perf_counter() - start)
