"""Rule train: one beta-VAE at one scan point (model, T, seed), resumed from its checkpoint folder.

Writes model.pt (weights + hparams + T, beta, V, seed) and train.json (contracts.md section 3).
stdout/stderr (one line per evaluation) are appended to the rule's log, so a resumed job keeps the history.
A NaN/inf loss raises NonFiniteLossError (run and step named); nothing is written then.
"""

from pathlib import Path

from spectral_collapse.rulelog import output_to_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with output_to_log(snakemake.log[0], append=True):
    from spectral_collapse.datamodule import ArrayDataModule
    from spectral_collapse.provenance import config_hash, package_versions, write_json
    from spectral_collapse.scan import t_from_label
    from spectral_collapse.training import model_meta, train
    from spectral_collapse.vae import VAEConfig, save_trained

    wc = snakemake.wildcards
    settings = dict(snakemake.params.settings)
    T = t_from_label(wc.T)
    seed = int(wc.seed)
    run_id = f"{wc.model}/T{wc.T}/seed{seed}"
    data = ArrayDataModule.from_store(snakemake.input.store)
    vae_cfg = VAEConfig.from_settings(settings, n_features=data.n_features)
    print(f"[{run_id}] start: T={T} V={data.V:.6f} family={vae_cfg.family} depth={vae_cfg.depth} "
          f"training={settings['training']}", flush=True)
    result = train(
        data, vae_cfg, T,
        settings=settings["training"],
        seed=seed,
        run_dir=Path(snakemake.output.model).parent,
        checkpoint_dir=snakemake.params.checkpoint_dir,
        log_dir=snakemake.params.log_dir,
        run_name=run_id,
        threads=max(int(snakemake.threads), 1),
    )
    summary = {
        **result.summary,
        "run_id": run_id,
        "model": wc.model,
        "settings": settings,
        "settings_hash": config_hash(settings),
        "package_versions": package_versions(),
    }
    save_trained(snakemake.output.model, result.model, {**model_meta(summary), "run_id": run_id})
    write_json(snakemake.output.summary, summary)
    print(f"[{run_id}] done: status={summary['status']} updates={summary['updates']} "
          f"resumed_from={summary['resumed_from_step']} {summary['ms_per_step']:.2f} ms/step "
          f"wall {summary['wall_time_s']:.1f} s", flush=True)
