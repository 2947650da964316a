"""Rule measure_ensemble: per-member latents table, ranked-pruning curve and run.json of a trained chunk.

Measured on the test and validation splits with spectral_collapse.measure (all members at once); the
tables have the single-run schema with one run_id per member, and run.json lists the members under `runs`
(contracts.md section 3). Never retrains.
"""

import json
import sys
import traceback
from pathlib import Path

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
Path(snakemake.log[0]).parent.mkdir(parents=True, exist_ok=True)
_log = open(snakemake.log[0], "w", buffering=1)
sys.stdout = sys.stderr = _log

try:
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
except BaseException:
    traceback.print_exc(file=_log)
    _log.flush()
    raise
