"""Rule summary: results/summary.json, the study summary: every model's analysis, the PCA, the data checksums,
the config hash and package versions."""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "summary") as log:
    import pandas as pd

    from spectral_collapse.analysis.study_summary import study_summary
    from spectral_collapse.provenance import read_json, write_json

    analyses = {a["model"]: a for a in map(read_json, snakemake.input.analyses)}
    summary = study_summary(analyses, pd.read_parquet(snakemake.input.pca), read_json(snakemake.input.verified),
                            read_json(snakemake.input.store_description), dict(snakemake.params.config))
    write_json(snakemake.output.summary, summary)
    log.info("wrote %s for models %s (config hash %s)", snakemake.output.summary, list(analyses), summary["config_hash"])
