"""Rule measure: per-latent table, ranked-pruning curve and run.json of one trained model.

Measured on the test, validation and train splits (measure.MEASURED_SPLITS; contracts.md section 3); never retrains.
"""

import json
import time
from pathlib import Path

from spectral_collapse.rulelog import output_to_log

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive

with output_to_log(snakemake.log[0], append=False):
    import torch

    from spectral_collapse.allocator import keep_freed_memory
    from spectral_collapse.measure import MEASURED_SPLITS, measure_tables, write_parquet
    from spectral_collapse.provenance import config_hash, package_versions, sha256_file, write_json
    from spectral_collapse.store import load_split
    from spectral_collapse.vae import load_trained

    start = time.perf_counter()
    torch.set_num_threads(max(int(snakemake.threads), 1))
    keep_freed_memory()  # no page faults on every block's activations (allocator.py)
    model, meta = load_trained(snakemake.input.model)
    summary = json.loads(Path(snakemake.input.summary).read_text())
    verified = json.loads(Path(snakemake.input.verified).read_text())
    active = float(snakemake.config.get("analysis", {}).get("active_threshold", 0.1))
    splits = {s: load_split(snakemake.input.store, s) for s in MEASURED_SPLITS}
    latents, pruning, totals = measure_tables(
        model, splits,
        V=float(summary["V"]),
        run_ids=[summary["run_id"]],
        model_id=summary["model"],
        T=[summary["T"]],
        beta=[summary["beta"]],
        seed=int(summary["seed"]),
        m2_drift=[summary["m2_drift"]],
        converged=[summary["status"] == "converged"],
        active_threshold=active,
    )
    write_parquet(latents, snakemake.output.latents)
    write_parquet(pruning, snakemake.output.pruning)
    run = {
        **summary,
        "converged": summary["status"] == "converged",
        "totals": totals[0],
        "active_threshold": active,
        "config": snakemake.config,
        "config_hash": config_hash(snakemake.config),
        "package_versions": package_versions(),
        "data_checksums": verified.get("files", {}),
        "model_sha256": sha256_file(snakemake.input.model),
        "measure_time_s": time.perf_counter() - start,
    }
    write_json(snakemake.output.run, run)
    t = totals[0]["test"]
    print(f"[{summary['run_id']}] test: D_tilde={t['D_tilde']:.5f} R={t['R']:.4f} active={t['n_active']} "
          f"in {run['measure_time_s']:.1f} s", flush=True)
