"""Rule collect_scan: concatenate one model's run tables into scan_latents/pruning/runs.parquet."""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "collect_scan") as log:
    from spectral_collapse.analysis.collect import collect_scan
    from spectral_collapse.provenance import write_parquet

    latents, pruning, runs = collect_scan(snakemake.input.latents, snakemake.input.pruning, snakemake.input.runs)
    write_parquet(latents, snakemake.output.latents)
    write_parquet(pruning, snakemake.output.pruning)
    write_parquet(runs, snakemake.output.runs)
    log.info("%d runs (%d converged), %d latent rows, %d pruning rows", len(runs), int(runs["converged"].sum()),
             len(latents), len(pruning))
