"""Rule measure_ensemble: per-member latents table, ranked-pruning curve and run.json of a trained chunk.

Measured on the test, validation and train splits (measure.MEASURED_SPLITS) with spectral_collapse.measure (all members at once); the
tables have the single-run schema with one run_id per member, and run.json lists the members under `runs`
(contracts.md section 3). Never retrains.
"""

import json
from pathlib import Path

from spectral_collapse.rulelog import output_to_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with output_to_log(snakemake.log[0], append=False):
    import torch

    from spectral_collapse.ensemble import measure_chunk_job
    from spectral_collapse.provenance import config_hash

    torch.set_num_threads(max(int(snakemake.threads), 1))
    verified = json.loads(Path(snakemake.input.verified).read_text())
    active = float(snakemake.config.get("analysis", {}).get("active_threshold", 0.1))
    chunk = measure_chunk_job(
        snakemake.input.store, snakemake.input.model, snakemake.input.summary,
        latents_path=snakemake.output.latents,
        pruning_path=snakemake.output.pruning,
        run_path=snakemake.output.run,
        active_threshold=active,
        extra={
            "active_threshold": active,
            "config": snakemake.config,
            "config_hash": config_hash(snakemake.config),
            "data_checksums": verified.get("files", {}),
        },
    )
    print(f"[{', '.join(chunk.run_ids)}] measured in {chunk.run['measure_time_s']:.1f} s: "
          + ", ".join(f"T={r['T']:.4g} active={r['totals']['test']['n_active']}" for r in chunk.run["runs"]),
          flush=True)
