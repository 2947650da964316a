"""Rule hash_source: the SHA-256 checksums of a raster stack's or a table's files (config data.source).

Writes results/data/source_verified.json, the data's identity: the checksums and the kind of source, no path
(the same files reached through another folder are the same data). A failed run leaves the earlier record.
"""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "hash_source") as log:
    from spectral_collapse.provenance import write_json
    from spectral_collapse.sources import source_checksums, source_kind

    data = snakemake.config["data"]
    files = source_checksums(data, snakemake.scriptdir + "/..")
    write_json(snakemake.output.verified, {"dataset": source_kind(data), "files": files})
    log.info("%s source: %d files hashed: %s", source_kind(data), len(files), sorted(files))
