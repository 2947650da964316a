"""Rule measure: per-latent table, ranked-pruning curve and run.json of every member of a trained group.

Measured on the splits of params.splits (test, validation, train), held-out means weighted by cell area
(contracts.md section 3); never retrains. Then the stability check of params.stability (analysis.stability_check)
probes every member from the collapsed side on a copy (spectral_collapse.stability). The config and the data checksums are copied into run.json as
provenance only: deliberately not params, so that a config change that does not touch the measurement
(a figure setting, another model's budget) never re-measures.
"""

import json
from pathlib import Path

from spectral_collapse.rulelog import rule_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with rule_log(snakemake.log[0], "measure"):
    import torch

    from spectral_collapse.group import measure_group_job
    from spectral_collapse.provenance import config_hash

    torch.set_num_threads(max(int(snakemake.threads), 1))
    verified = json.loads(Path(snakemake.input.verified).read_text())
    group = measure_group_job(
        snakemake.input.store, snakemake.input.model, snakemake.input.record,
        latents_path=snakemake.output.latents,
        pruning_path=snakemake.output.pruning,
        run_path=snakemake.output.run,
        splits=list(snakemake.params.splits),
        active_threshold=float(snakemake.params.active_threshold),
        stability=dict(snakemake.params.stability),
        extra={
            "config": snakemake.config,
            "config_hash": config_hash(snakemake.config),
            "data_checksums": verified.get("files", {}),
        },
    )
    print(f"[{', '.join(group.run_ids)}] measured in {group.run['measure_time_s']:.1f} s: "
          + ", ".join(f"T={r['T']:.4g} active={r['totals']['test']['n_active']}" for r in group.run["runs"]),
          flush=True)
    check = group.run["stability_check"]
    if check["enabled"]:
        failed = [r["run_id"] for r in group.run["runs"] if not r["stability"]["passed"]]
        print(f"stability check ({check['updates']} updates, {check['time_s']:.1f} s): {len(failed)} of "
              f"{len(group.run['runs'])} failed" + (f": {', '.join(failed)}" if failed else ""), flush=True)
