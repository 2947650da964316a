"""Rule latent_maps: encode every land cell with the map model; leading latents to NetCDF, their
correlations with the input variables to Parquet."""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "latent_maps") as log:
    import torch

    from spectral_collapse.analysis.maps import latent_maps, write_netcdf
    from spectral_collapse.provenance import write_parquet

    torch.set_num_threads(max(int(snakemake.threads), 1))
    maps, corr = latent_maps(snakemake.input.store, snakemake.input.model, int(snakemake.params.n_latents))
    write_netcdf(maps, snakemake.output.maps)
    write_parquet(corr, snakemake.output.correlations)
    log.info("model %s (T=%s): leading latents %s with M^2 %s", snakemake.input.model, maps.attrs["T"],
             maps["latent"].values.tolist(), [round(float(m), 4) for m in maps["M2"].values])
