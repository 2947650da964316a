"""Concatenate the per-run tables of one model (contracts.md section 3) into the scan tables (section 4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

# Scalar fields of run.json / train.json copied into scan_runs.parquet when present.
RUN_FIELDS = (
    "run_id", "model", "family", "depth", "T", "beta", "V", "sigma_dec2", "seed", "status",
    "converged", "updates", "wall_time_s",
)


def read_tables(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate Parquet tables (one per run or per vectorized chunk)."""
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError("no rows in any of the run tables")
    return pd.concat(frames, ignore_index=True)


def _flatten_totals(payload: Mapping[str, Any]) -> dict[str, float]:
    """run.json's `totals` (per split: D, D_tilde_sampled, R, ...) as flat columns `<split>_<name>`, whatever
    names the measurement writes."""
    out: dict[str, float] = {}
    totals = payload.get("totals")
    if isinstance(totals, Mapping):
        for split, values in totals.items():
            if isinstance(values, Mapping):
                for name, v in values.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        out[f"{split}_{name}"] = float(v)
    return out


def run_rows(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per run of a run.json (a vectorized chunk's run.json may hold a list under `runs`)."""
    members = payload.get("runs")
    if isinstance(members, list) and members and isinstance(members[0], Mapping):
        shared = {k: v for k, v in payload.items() if k != "runs"}
        return [row for m in members for row in run_rows({**shared, **m})]
    row: dict[str, Any] = {}
    for key in RUN_FIELDS:
        value = payload.get(key)
        if isinstance(value, (str, int, float, bool, np.generic)) or value is None:
            row[key] = value
    row.update(_flatten_totals(payload))
    if row.get("converged") is None and row.get("status") is not None:
        row["converged"] = row["status"] == "converged"
    return [row]


def read_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    rows = []
    for p in paths:
        rows.extend(run_rows(json.loads(Path(p).read_text())))
    return pd.DataFrame(rows)


def collect_scan(latent_paths, pruning_paths, run_paths) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three scan tables of one model: latents, pruning, runs (one row per run_id).

    `runs.converged` is taken from run.json (status == "converged"); where run.json has no status it falls
    back to the latents table's `converged` column. Rows are sorted by seed, T descending, then rank / K.
    """
    latents = read_tables(latent_paths)
    pruning = read_tables(pruning_paths)
    runs = read_runs(run_paths)
    per_run = latents.groupby("run_id", sort=False).agg(
        T=("T", "first"), seed=("seed", "first"), converged_latents=("converged", "all")
    )
    if runs.empty or "run_id" not in runs:
        runs = per_run.reset_index().rename(columns={"converged_latents": "converged"})
    else:
        runs = runs.merge(per_run[["converged_latents"]], left_on="run_id", right_index=True, how="left")
        if "converged" not in runs:
            runs["converged"] = runs["converged_latents"]
        runs["converged"] = runs["converged"].fillna(runs["converged_latents"]).astype(bool)
        runs = runs.drop(columns="converged_latents")
    latents = latents.sort_values(["seed", "T", "split", "rank"], ascending=[True, False, True, True])
    pruning = pruning.sort_values(["seed", "T", "split", "K"], ascending=[True, False, True, True])
    runs = runs.sort_values(["seed", "T"], ascending=[True, False])
    return (latents.reset_index(drop=True), pruning.reset_index(drop=True), runs.reset_index(drop=True))


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write a table atomically."""
    from spectral_collapse.provenance import atomic_path

    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
