"""Rule summary: results/summary.json from every model's summary, data checksums, config hash, versions."""

import pandas as pd

from spectral_collapse.analysis.io import read_json, setup_logging
from spectral_collapse.analysis.summary import combine_summaries
from spectral_collapse.provenance import write_json

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
log = setup_logging(snakemake.log[0], "summary")
try:
    models = {}
    for path in snakemake.input.summaries:
        s = read_json(path)
        models[s["model"]] = s
    pca = pd.read_parquet(snakemake.input.pca)
    summary = combine_summaries(models, pca, read_json(snakemake.input.verified),
                                read_json(snakemake.input.store_report), dict(snakemake.params.config))
    write_json(snakemake.output.summary, summary)
    log.info("wrote %s for models %s (config hash %s)", snakemake.output.summary, list(models), summary["config_hash"])
except Exception:
    log.exception("summary failed")
    raise
