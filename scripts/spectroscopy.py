"""Rule spectroscopy: per model and eps, the model's d_eff and what its leading latents carry, beside PCA and a VIF
step: results/spectroscopy/spectroscopy.{json,csv} and one heatmap per model, from the cached tables."""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "spectroscopy") as log:
    import pandas as pd

    from spectral_collapse.analysis.spectroscopy import (figure_latents, model_spectroscopy, spectroscopy_json,
                                                         spectroscopy_table)
    from spectral_collapse.plotting.spectroscopy import plot_latent_variables
    from spectral_collapse.plotting.style import save_figure
    from spectral_collapse.provenance import atomic_path, read_json, write_json

    settings = dict(snakemake.params.settings)
    collinearity = read_json(snakemake.input.collinearity)
    models = {}
    for model, analysis, variables, latents, pruning, runs in zip(
            snakemake.params.models, snakemake.input.analyses, snakemake.input.variables, snakemake.input.latents,
            snakemake.input.pruning, snakemake.input.runs):
        models[model] = model_spectroscopy(model, read_json(analysis)["d_eff"], pd.read_parquet(latents),
                                           pd.read_parquet(pruning), pd.read_parquet(runs),
                                           pd.read_parquet(variables), float(settings["max_m2_drift"]),
                                           int(settings["n_carried_variables"]))
    table = spectroscopy_table(models, collinearity)
    with atomic_path(snakemake.output.table) as tmp:
        table.to_csv(tmp, index=False)
    write_json(snakemake.output.record, spectroscopy_json(models, table, collinearity, settings))
    for model, png in zip(snakemake.params.models, snakemake.output.figures):
        latents, what = figure_latents(models[model])
        save_figure(plot_latent_variables(models[model], latents, what), png)
        log.info("%s: %s", model, what)
    log.info("%d rows; VIF step keeps %d variables, %d PCA components hold %g of the training variance", len(table),
             len(collinearity["vif_step"]["kept"]), collinearity["pca_share"]["components"],
             collinearity["pca_share"]["share"])
