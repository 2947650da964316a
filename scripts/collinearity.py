"""Rule collinearity: the VIF step (usdm vifstep, statsmodels) and the PCA components for a variance share, both
of the training sample."""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "collinearity") as log:
    import pandas as pd

    from spectral_collapse.analysis.spectroscopy import collinearity
    from spectral_collapse.provenance import write_json

    record = collinearity(snakemake.input.store, pd.read_parquet(snakemake.input.pca),
                          float(snakemake.params.vif_threshold), float(snakemake.params.share))
    write_json(snakemake.output.collinearity, record)
    vif = record["vif_step"]
    log.info("VIF step (threshold %g): kept %d of %d (%s), dropped %s; %d PCA components hold %g of the variance",
             vif["threshold"], len(vif["kept"]), vif["n_variables"], ", ".join(vif["kept"]),
             [d["variable"] for d in vif["dropped"]], record["pca_share"]["components"], record["pca_share"]["share"])
