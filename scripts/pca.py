"""Rule pca: lambda_k and lambda_k / V of the standardized training sample, and the held-out splits' shift
a_k along each training axis (contracts.md section 4)."""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "pca") as log:
    from spectral_collapse.analysis.pca_table import pca_from_store
    from spectral_collapse.provenance import write_parquet

    table = pca_from_store(snakemake.input.store)
    write_parquet(table, snakemake.output.pca)
    log.info("V=%.6f, lambda/V = %s", table["V"].iloc[0], ", ".join(f"{v:.3g}" for v in table["lambda_over_V"]))
