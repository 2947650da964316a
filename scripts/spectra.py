"""Rule spectra: utility spectrum, thresholds, agreement, mean-field exponent, d_eff and the model summary."""

import pandas as pd

from spectral_collapse.provenance import write_parquet
from spectral_collapse.analysis.io import setup_logging
from spectral_collapse.analysis.summary import analyse_model
from spectral_collapse.provenance import write_json

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
log = setup_logging(snakemake.log[0], "spectra")
try:
    model = snakemake.wildcards.model
    spectra, d_eff, summary = analyse_model(
        pd.read_parquet(snakemake.input.latents), pd.read_parquet(snakemake.input.pruning),
        pd.read_parquet(snakemake.input.runs), pd.read_parquet(snakemake.input.pca),
        dict(snakemake.params.analysis), model)
    write_parquet(spectra, snakemake.output.spectra)
    write_parquet(d_eff, snakemake.output.d_eff)
    write_json(snakemake.output.summary, summary)
    mf = summary["meanfield"]
    log.info("%s: identity R^2 = %s, rank agreement = %s, mean-field exponent = %s +- %s, runs %s",
             model, summary["identity_r2"], summary["rank_agreement"], mf["exponent"], mf["stderr"],
             {k: summary["runs"][k] for k in ("total", "converged", "unconverged")})
    if "pca_relative_error" in summary:
        log.info("T_c / (lambda/V) - 1, top 5 ranks: %s", summary["pca_relative_error"][:5])
except Exception:
    log.exception("spectra failed")
    raise
