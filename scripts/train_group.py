"""Rule train: one group of scan points (model, T values, seed) as one Lightning job, resumed from its
checkpoint folder. Writes model.pt (every member; T, beta, run_id as lists) and train.json (the training
record, one entry per member under `members`; contracts.md section 3). stdout/stderr (one line per
evaluation) are appended to the rule's log, so a resumed job keeps its history. A NaN/inf loss raises
NonFiniteLossError (run and step named); nothing is written then.
"""

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "train", append=True):
    from spectral_collapse.group import train_group_job
    from spectral_collapse.provenance import config_hash

    wc = snakemake.wildcards
    settings = dict(snakemake.params.settings)
    Ts = [float(t) for t in snakemake.params.T]
    name = f"{wc.model}/{wc.group}/seed{wc.seed}"
    print(f"[{name}] start: {len(Ts)} scan point(s) T={Ts} training={settings['training']}", flush=True)
    group = train_group_job(
        snakemake.input.store, settings, Ts,
        model_id=wc.model,
        seed=int(wc.seed),
        model_path=snakemake.output.model,
        record_path=snakemake.output.record,
        checkpoint_dir=snakemake.params.checkpoint_dir,
        log_dir=snakemake.params.log_dir,
        threads=max(int(snakemake.threads), 1),
        extra={"group": wc.group, "settings_hash": config_hash(settings)},
    )
    r = group.record
    print(f"[{name}] done: updates={r['updates']} resumed_from={r['resumed_from_step']} {r['ms_per_step']:.2f} "
          f"ms/step, job {r['job_time_s']:.1f} s; point-updates {r['point_updates']} of {r['point_updates_unfrozen']} "
          "without freezing; " + ", ".join(f"T={m['T_grid']:.4g}:{m['status']}@{m['updates']}" for m in r["members"]),
          flush=True)
