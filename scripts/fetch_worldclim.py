"""Rule fetch_worldclim: locate or download WorldClim 2.1 (10', bio), verify the 19 pinned checksums.

Writes results/data/worldclim_verified.json = the 19 checksums and nothing else (the data's identity).
Where the rasters are (config data.worldclim_dir / $WORLDCLIM_DIR, an earlier download in
data.download_dir, or a fresh download of data.url) is read here at run time, on purpose not from
Snakemake params or inputs: another path to the same files must not rerun this rule or anything after it.
It runs only when there is no verified record, the pins changed or this script did (workflow/rules/data.smk);
a failed run leaves the earlier record in place (an update() output).
"""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "fetch_worldclim") as log:
    import os

    from spectral_collapse.provenance import write_json
    from spectral_collapse.worldclim import ENV_VAR, locate_rasters, resolve_local_source, verified_record

    data = snakemake.config["data"]
    local = resolve_local_source(data.get("worldclim_dir"), os.environ.get(ENV_VAR))
    log.info("source: %s", local.path if local else f"earlier download in {data['download_dir']}, else {data['url']}")
    folder, info, files = locate_rasters(local, data["url"], data["download_dir"])
    if files != dict(snakemake.params.sha256):
        raise RuntimeError("verified checksums differ from the rule's pins (spectral_collapse.worldclim)")
    write_json(snakemake.output.verified, verified_record(files))
    log.info("verified 19 files in %s (%s: %s)", folder, info["source"], info["origin"])
