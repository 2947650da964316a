"""Rule analyse_model: utility spectrum, thresholds, agreement, mean-field exponent, d_eff and the model's
analysis.json, from its cached scan tables."""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "analyse_model") as log:
    import pandas as pd

    from spectral_collapse.analysis.model_analysis import analyse_model
    from spectral_collapse.provenance import write_json, write_parquet

    model = snakemake.wildcards.model
    spectra, d_eff, analysis = analyse_model(
        pd.read_parquet(snakemake.input.latents), pd.read_parquet(snakemake.input.pruning),
        pd.read_parquet(snakemake.input.runs), pd.read_parquet(snakemake.input.pca),
        dict(snakemake.params.analysis), model)
    write_parquet(spectra, snakemake.output.spectra)
    write_parquet(d_eff, snakemake.output.d_eff)
    write_json(snakemake.output.analysis, analysis)
    mf = analysis["meanfield"]
    log.info("%s: identity R^2 = %s, rank agreement = %s, Kendall tau = %s, mean-field exponent = %s +- %s, runs %s",
             model, analysis["identity_r2"], analysis["rank_agreement"], analysis["kendall_tau"], mf["exponent"],
             mf["stderr"], {k: analysis["runs"][k] for k in ("total", "converged", "unconverged")})
    if "pca_relative_error" in analysis:
        log.info("T_c / (lambda/V) - 1, top 5 ranks: %s", analysis["pca_relative_error"][:5])
