"""Rule train_ensemble: several scan points (model, chunk of T values, seed) in one vectorized job.

Trains the chunk's points as one ensemble (spectral_collapse.ensemble.train_chunk_job), resuming from its
checkpoint folder, and writes model.pt (all members; T, beta, run_id as lists) and train.json (the
training summary, one entry per member under `members`, and the members' run_ids). Rule measure_ensemble
measures it. A NaN/inf loss raises NonFiniteLossError (run and step named) and nothing is written.
"""

from spectral_collapse.rulelog import output_to_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with output_to_log(snakemake.log[0], append=True):
    from spectral_collapse.ensemble import train_chunk_job
    from spectral_collapse.provenance import config_hash

    wc = snakemake.wildcards
    settings = dict(snakemake.params.settings)
    Ts = [float(t) for t in snakemake.params.T]
    name = f"{wc.model}/seed{wc.seed}/chunk{wc.chunk}"
    print(f"[{name}] start: E={len(Ts)} T={Ts} training={settings['training']}", flush=True)
    chunk = train_chunk_job(
        snakemake.input.store, settings, Ts,
        model_id=wc.model,
        seed=int(wc.seed),
        model_path=snakemake.output.model,
        summary_path=snakemake.output.summary,
        checkpoint_dir=snakemake.params.checkpoint_dir,
        log_dir=snakemake.params.log_dir,
        threads=max(int(snakemake.threads), 1),
        extra={"chunk": wc.chunk, "settings_hash": config_hash(settings)},
    )
    s = chunk.summary
    members = s.get("members") or [s]
    print(f"[{name}] done: updates={s['updates']} {s['ms_per_step']:.2f} ms/step for {len(Ts)} points, "
          f"job {s['job_time_s']:.1f} s; " + ", ".join(f"T={m['T']:.4g}:{m['status']}" for m in members), flush=True)
