"""Concatenate the per-run tables of one model (contracts.md section 3) into the scan tables (section 4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

# Fields of a run in run.json copied into scan_runs.parquet (shared fields of the group, then the member's).
RUN_FIELDS = (
    "run_id", "model", "family", "depth", "T", "T_grid", "beta", "V", "sigma_dec2", "seed", "status",
    "converged", "converged_at", "updates", "wall_time_s",
)
# The stability check of a run (run.json runs[e]["stability"], spectral_collapse.stability) as scan_runs columns:
# stable (True passed, False failed, missing: not checked), then these fields as stability_<name>.
STABILITY_FIELDS = ("reactivated", "n_collapsed", "grown", "loss_before", "loss_after", "loss_control", "loss_change",
                    "loss_change_control")


def read_tables(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate Parquet tables (one per training job, each holding one or more runs)."""
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError("no rows in any of the run tables")
    return pd.concat(frames, ignore_index=True)


def run_rows(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per run of a job's run.json (its `runs`, contracts.md section 3): RUN_FIELDS and the totals
    per split as flat columns `<split>_<name>`."""
    shared = {k: v for k, v in payload.items() if k != "runs"}
    rows = []
    for run in payload["runs"]:
        merged = {**shared, **run}
        row = {key: merged.get(key) for key in RUN_FIELDS}
        row.update({f"{split}_{name}": float(v) for split, values in run["totals"].items()
                    for name, v in values.items()})
        check = run.get("stability")
        row["stable"] = None if check is None else bool(check["passed"])
        row.update({f"stability_{name}": None if check is None else check.get(name) for name in STABILITY_FIELDS})
        rows.append(row)
    return rows


def read_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """scan_runs rows; `stable` is a nullable boolean and the stability counts nullable integers (missing: the
    run was not checked)."""
    rows = []
    for p in paths:
        rows.extend(run_rows(json.loads(Path(p).read_text())))
    runs = pd.DataFrame(rows)
    runs["stable"] = runs["stable"].astype("boolean")
    for name in ("reactivated", "n_collapsed", "grown"):
        runs[f"stability_{name}"] = runs[f"stability_{name}"].astype("Int64")
    for name in ("loss_before", "loss_after", "loss_control", "loss_change", "loss_change_control"):
        runs[f"stability_{name}"] = runs[f"stability_{name}"].astype("float64")
    return runs


def collect_scan(latent_paths, pruning_paths, run_paths) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three scan tables of one model: latents, pruning, runs (one row per run_id).
    Rows are sorted by seed, T descending, then rank / K."""
    latents = read_tables(latent_paths)
    pruning = read_tables(pruning_paths)
    runs = read_runs(run_paths)
    runs["converged"] = runs["converged"].astype(bool)
    latents = latents.sort_values(["seed", "T", "split", "rank"], ascending=[True, False, True, True])
    pruning = pruning.sort_values(["seed", "T", "split", "K"], ascending=[True, False, True, True])
    runs = runs.sort_values(["seed", "T"], ascending=[True, False])
    return (latents.reset_index(drop=True), pruning.reset_index(drop=True), runs.reset_index(drop=True))
