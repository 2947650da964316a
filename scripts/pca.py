"""Rule pca: lambda_k and lambda_k / V of the standardized training sample (contracts.md section 4)."""

from spectral_collapse.provenance import write_parquet
from spectral_collapse.analysis.io import setup_logging
from spectral_collapse.analysis.pca_table import pca_from_store

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
log = setup_logging(snakemake.log[0], "pca")
try:
    table = pca_from_store(snakemake.input.store)
    write_parquet(table, snakemake.output.pca)
    log.info("V=%.6f, lambda/V = %s", table["V"].iloc[0], ", ".join(f"{v:.3g}" for v in table["lambda_over_V"]))
except Exception:
    log.exception("pca failed")
    raise
