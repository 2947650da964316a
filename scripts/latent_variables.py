"""Rule latent_variables: r of every active latent's posterior mean with every input variable (test split), for
each scan point of one model at equilibrium."""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "latent_variables") as log:
    import pandas as pd
    import torch

    from spectral_collapse.analysis.spectroscopy import latent_variables
    from spectral_collapse.provenance import write_parquet

    torch.set_num_threads(max(int(snakemake.threads), 1))
    table = latent_variables(snakemake.input.store, list(snakemake.input.models),
                             pd.read_parquet(snakemake.input.latents), pd.read_parquet(snakemake.input.runs),
                             float(snakemake.params.max_drift))
    write_parquet(table, snakemake.output.variables)
    log.info("%s: %d scan points, %d active latents, %d variables", snakemake.wildcards.model,
             table["run_id"].nunique(), len(table.drop_duplicates(["run_id", "latent"])), table["variable"].nunique())
