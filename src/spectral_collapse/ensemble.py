"""Vectorized scan: one Lightning job trains several scan points (T values) at once.

The training stage's modules are ensemble-ready (``vae.VAE`` holds ``E`` members with weights shaped
``(E, in, out)`` applied by ``torch.baddbmm``; ``lightning_module.BetaVAEModule`` owns the per-member loss
``D_e + beta_e R_e`` with ``beta`` a tensor of shape ``(E,)`` and optimises their SUM, so every member's
gradient and Adam moments are its own). This module only groups scan points into such a job, names the
members like the single runs and writes the per-member tables of ``docs/contracts.md`` section 3:

- every member sees exactly the batches a single job with the same seed would see (the batch order
  depends on the seed and the epoch only, and the batch is shared by all members); initialisation
  and reparametrisation noise differ, so a member agrees with its single job up to seed noise
  (``tests/test_ensemble.py`` checks M_k^2 per rank);
- convergence is judged per member; the job stops when every member has converged or at the update
  budget, so a member that converged early keeps training (it only gets closer to equilibrium) and
  its status and ``converged_at`` step are recorded;
- ``run_id`` of member ``e`` is ``{model}/T{t_label(T_e)}/seed{seed}``, the same as the single run of
  that scan point, so the analysis cannot tell the two layouts apart.

Entry points: ``train_chunk`` / ``measure_chunk`` (in memory); ``train_chunk_job`` (rule ``train_ensemble``:
``model.pt``, ``train.json``) and ``measure_chunk_job`` (rule ``measure_ensemble``: ``latents.parquet``,
``pruning.parquet``, ``run.json``), so that changing a measurement never retrains; ``run_chunk`` does both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .scan import t_label



def member_run_ids(model_id: str, Ts: Sequence[float], seed: int) -> list[str]:
    """The run id of every member: the same string as the single-run job of that scan point."""
    return [f"{model_id}/T{t_label(float(T))}/seed{int(seed)}" for T in Ts]


@dataclass
class ChunkResult:
    summary: dict[str, Any]  # training summary (training.train), one entry per member under "members"
    model: Any  # trained ensemble VAE (cpu, eval mode)
    run_ids: list[str]
    latents: Any = None  # pandas DataFrames, once measured
    pruning: Any = None
    run: dict[str, Any] | None = None


def _member_summaries(summary: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    """training.train's summary holds ``members`` for E > 1 and flat fields for E = 1."""
    if "members" in summary:
        return [dict(m) for m in summary["members"]]
    keys = ("T", "beta", "sigma_dec2", "T_eff", "status", "converged_at", "m2_drift", "final")
    return [{k: summary.get(k) for k in keys}] if n == 1 else []


def train_chunk(
    data,
    settings: Mapping[str, Any],
    Ts: Sequence[float],
    *,
    model_id: str,
    seed: int = 0,
    run_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    log_dir: str | Path | None = None,
    threads: int | None = None,
    progress: bool | None = None,
) -> ChunkResult:
    """Train the scan points ``Ts`` of one model as one vectorized ensemble (E = len(Ts)).

    ``data`` is a ``datamodule.ArrayDataModule``; ``settings`` is ``common.smk``'s ``model_settings``
    dict (family, depth, model, decoder, training). Resumes from ``checkpoint_dir/last.ckpt`` if present.
    """
    from .training import train
    from .vae import VAEConfig

    Ts = [float(t) for t in Ts]
    if not Ts:
        raise ValueError("an ensemble chunk needs at least one scan point")
    if len(set(t_label(t) for t in Ts)) != len(Ts):
        raise ValueError(f"duplicate scan points in one chunk: {Ts}")
    cfg = VAEConfig.from_settings(settings, n_features=data.n_features, ensemble=len(Ts))
    run_ids = member_run_ids(model_id, Ts, seed)
    name = f"{model_id}/seed{int(seed)}/T{t_label(Ts[0])}..T{t_label(Ts[-1])} (E={len(Ts)})"
    result = train(
        data, cfg, Ts if len(Ts) > 1 else Ts[0],
        settings=settings["training"], seed=int(seed), run_dir=run_dir,
        checkpoint_dir=checkpoint_dir, log_dir=log_dir, run_name=name, threads=threads, progress=progress,
    )
    return ChunkResult(summary=result.summary, model=result.model, run_ids=run_ids)


def measure_chunk(
    chunk: ChunkResult,
    splits: Mapping[str, np.ndarray],
    *,
    model_id: str,
    active_threshold: float = 0.1,
) -> ChunkResult:
    """Per-member latents / pruning tables and totals (``measure.measure_tables``, all members at once)."""
    from .measure import measure_tables

    s = chunk.summary
    members = _member_summaries(s, len(chunk.run_ids))
    latents, pruning, totals = measure_tables(
        chunk.model, splits,
        V=float(s["V"]),
        run_ids=chunk.run_ids,
        model_id=model_id,
        T=[m["T"] for m in members],
        beta=[m["beta"] for m in members],
        seed=int(s["seed"]),
        m2_drift=np.array([m["m2_drift"] for m in members], dtype=float),
        converged=[m["status"] == "converged" for m in members],
        active_threshold=active_threshold,
    )
    shared = {k: v for k, v in s.items() if k not in ("members", "T", "beta")}
    runs = []
    for e, m in enumerate(members):
        runs.append({
            **m,
            "run_id": chunk.run_ids[e],
            "model": model_id,
            "member": e,
            "converged": m["status"] == "converged",
            "totals": totals[e],
        })
    chunk.latents, chunk.pruning = latents, pruning
    chunk.run = {**shared, "model": model_id, "ensemble": len(members), "run_ids": chunk.run_ids,
                 "T": [m["T"] for m in members], "runs": runs}
    return chunk


def train_chunk_job(
    store: str | Path,
    settings: Mapping[str, Any],
    Ts: Sequence[float],
    *,
    model_id: str,
    seed: int,
    model_path: str | Path,
    summary_path: str | Path,
    checkpoint_dir: str | Path | None = None,
    log_dir: str | Path | None = None,
    threads: int | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> ChunkResult:
    """Rule train_ensemble: load the store, train the chunk, write ``model.pt`` and ``train.json``
    (the training summary with ``run_ids``, one entry per member under ``members``)."""
    from .datamodule import ArrayDataModule
    from .provenance import package_versions, write_json
    from .training import model_meta
    from .vae import save_trained

    start = time.perf_counter()
    data = ArrayDataModule.from_store(store)
    chunk = train_chunk(
        data, settings, Ts, model_id=model_id, seed=seed, run_dir=Path(model_path).parent,
        checkpoint_dir=checkpoint_dir, log_dir=log_dir, threads=threads, progress=progress,
    )
    meta = {**model_meta(chunk.summary), "run_id": chunk.run_ids, "model": model_id}
    save_trained(model_path, chunk.model, meta)
    chunk.summary = {**chunk.summary, "model": model_id, "run_ids": chunk.run_ids, "settings": dict(settings),
                     "package_versions": package_versions(), "job_time_s": time.perf_counter() - start,
                     **dict(extra or {})}
    write_json(summary_path, chunk.summary)
    return chunk


def measure_chunk_job(
    store: str | Path,
    model_path: str | Path,
    summary_path: str | Path,
    *,
    latents_path: str | Path,
    pruning_path: str | Path,
    run_path: str | Path,
    active_threshold: float = 0.1,
    extra: Mapping[str, Any] | None = None,
) -> ChunkResult:
    """Rule measure_ensemble: measure every member of a trained chunk on the test and validation splits and
    write the latents / pruning tables and ``run.json`` (never retrains)."""
    import json

    from .measure import MEASURED_SPLITS, write_parquet
    from .provenance import package_versions, sha256_file, write_json
    from .allocator import keep_freed_memory
    from .store import load_split
    from .vae import load_trained

    keep_freed_memory()  # a job: no page faults on every block's activations (allocator.py)
    start = time.perf_counter()
    model, _ = load_trained(model_path)
    summary = json.loads(Path(summary_path).read_text())
    chunk = ChunkResult(summary=summary, model=model, run_ids=list(summary["run_ids"]))
    splits = {s: load_split(store, s) for s in MEASURED_SPLITS}
    measure_chunk(chunk, splits, model_id=summary["model"], active_threshold=active_threshold)
    write_parquet(chunk.latents, latents_path)
    write_parquet(chunk.pruning, pruning_path)
    chunk.run.update({
        "package_versions": package_versions(),
        "model_sha256": sha256_file(model_path),
        "measure_time_s": time.perf_counter() - start,
        **dict(extra or {}),
    })
    write_json(run_path, chunk.run)
    return chunk


def run_chunk(
    store: str | Path,
    settings: Mapping[str, Any],
    Ts: Sequence[float],
    *,
    model_id: str,
    seed: int,
    out_dir: str | Path,
    checkpoint_dir: str | Path | None = None,
    log_dir: str | Path | None = None,
    threads: int | None = None,
    active_threshold: float = 0.1,
    extra: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> ChunkResult:
    """Both rules in one call (tests, interactive use): train, then measure; writes ``model.pt``,
    ``train.json``, ``latents.parquet``, ``pruning.parquet`` and ``run.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    train_chunk_job(
        store, settings, Ts, model_id=model_id, seed=seed, model_path=out_dir / "model.pt",
        summary_path=out_dir / "train.json", checkpoint_dir=checkpoint_dir, log_dir=log_dir, threads=threads,
        extra=extra, progress=progress,
    )
    return measure_chunk_job(
        store, out_dir / "model.pt", out_dir / "train.json", latents_path=out_dir / "latents.parquet",
        pruning_path=out_dir / "pruning.parquet", run_path=out_dir / "run.json",
        active_threshold=active_threshold,
    )
