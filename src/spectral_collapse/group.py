"""A training job trains a group of scan points of one model and seed; by default a group of one point.

The training stage's modules are ensemble-ready (``vae.VAE`` holds ``E`` members with weights shaped
``(E, in, out)`` applied by ``torch.baddbmm``; ``lightning_module.BetaVAESystem`` owns the per-member loss
``D_e + beta_e R_e`` with ``beta`` a tensor of shape ``(E,)`` and optimises their SUM, so every member's
gradient and Adam moments are its own). A group of E scan points is one such ensemble:

- every member sees exactly the batches a job of one point with the same seed would see (the batch order
  depends on the seed and the epoch only, and the batch is shared by all members); initialisation and
  reparametrisation noise differ, so a member agrees with its one-point job up to seed noise
  (``tests/test_group.py`` checks M_k^2 per rank);
- convergence, annealing and freezing are per member (``callbacks.Convergence``): a member that has converged
  stops costing compute, and the job stops when every member has converged or at the update budget;
- ``run_id`` of member ``e`` is ``{model}/T{t_label(T_e)}/seed{seed}`` whatever the group size, so the
  analysis cannot tell group sizes apart.

Entry points: ``train_group`` / ``measure_group`` (in memory); ``train_group_job`` (rule ``train``:
``model.pt``, ``train.json``) and ``measure_group_job`` (rule ``measure``: ``latents.parquet``,
``pruning.parquet``, ``run.json``), so that changing a measurement never retrains.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .scan import t_label
from .settings import TrainingSettings


def member_run_ids(model_id: str, Ts: Sequence[float], seed: int) -> list[str]:
    """The run id of every member: one per scan point, whatever the group size."""
    return [f"{model_id}/T{t_label(float(T))}/seed{int(seed)}" for T in Ts]


@dataclass
class GroupResult:
    record: dict[str, Any]  # the training record (train.json), one entry per member under "members"
    model: Any  # trained ensemble VAE (cpu, eval mode)
    run_ids: list[str]
    latents: Any = None  # pandas DataFrames, once measured
    pruning: Any = None
    run: dict[str, Any] | None = None


def train_group(
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
) -> GroupResult:
    """Train the scan points ``Ts`` of one model as one ensemble (E = len(Ts)).

    ``data`` is a ``datamodule.ArrayDataModule``; ``settings`` is ``scan.model_settings``'s dict (family,
    depth, model, decoder, training). Resumes from ``checkpoint_dir/last.ckpt`` if present.
    """
    from .training import train
    from .vae import VAEConfig

    Ts = [float(t) for t in Ts]
    if not Ts:
        raise ValueError("a group needs at least one scan point")
    if len(set(t_label(t) for t in Ts)) != len(Ts):
        raise ValueError(f"duplicate scan points in one group: {Ts}")
    cfg = VAEConfig.from_settings(settings, n_features=data.n_features, ensemble=len(Ts))
    run_ids = member_run_ids(model_id, Ts, seed)
    name = run_ids[0] if len(Ts) == 1 else f"{model_id}/seed{int(seed)}/T{t_label(Ts[0])}..T{t_label(Ts[-1])} (E={len(Ts)})"
    st = TrainingSettings.from_mapping(settings["training"])
    if st.chain and len(Ts) > 1:
        from .chain import train_chain

        base = Path(run_dir) if run_dir is not None else None
        if base is None and (checkpoint_dir is None or log_dir is None):
            raise ValueError("a warm-start chain needs run_dir (or checkpoint_dir and log_dir) for its points")
        result = train_chain(
            data, cfg, Ts, settings=st, seed=int(seed),
            checkpoint_dir=checkpoint_dir or base / "checkpoints", log_dir=log_dir or base / "logs",
            run_name=f"{name} chain", threads=threads, progress=progress,
            reopen_threshold=settings.get("reopen_threshold"),
        )
        return GroupResult(record=result.record, model=result.model, run_ids=run_ids)
    result = train(
        data, cfg, Ts, settings=st, seed=int(seed), run_dir=run_dir,
        checkpoint_dir=checkpoint_dir, log_dir=log_dir, run_name=name, threads=threads, progress=progress,
    )
    return GroupResult(record=result.record, model=result.model, run_ids=run_ids)


def measure_group(
    group: GroupResult,
    splits: Mapping[str, np.ndarray],
    *,
    model_id: str,
    active_threshold: float,
    weights: Mapping[str, np.ndarray | None] | None = None,
) -> GroupResult:
    """Per-member latents / pruning tables and totals (``measure.measure_tables``, all members at once)."""
    from .measure import measure_tables

    record = group.record
    members = record["members"]
    latents, pruning, totals = measure_tables(
        group.model, splits,
        V=float(record["V"]),
        run_ids=group.run_ids,
        model_id=model_id,
        T=[m["T"] for m in members],
        beta=[m["beta"] for m in members],
        seed=int(record["seed"]),
        active_threshold=active_threshold,
        weights=weights,
        m2_drift=np.array([m["m2_drift"] for m in members], dtype=float),
        converged=[m["status"] == "converged" for m in members],
    )
    runs = [{**m, "run_id": group.run_ids[e], "model": model_id, "member": e,
             "converged": m["status"] == "converged", "totals": totals[e]} for e, m in enumerate(members)]
    # the job's settings (training, hparams) stay in train.json; run.json's one copy is the measured config
    shared = {k: v for k, v in record.items() if k not in ("members", "training", "hparams")}
    group.latents, group.pruning = latents, pruning
    group.run = {**shared, "model": model_id, "group_size": len(members), "run_ids": group.run_ids, "runs": runs}
    return group


def train_group_job(
    store: str | Path,
    settings: Mapping[str, Any],
    Ts: Sequence[float],
    *,
    model_id: str,
    seed: int,
    model_path: str | Path,
    record_path: str | Path,
    checkpoint_dir: str | Path | None = None,
    log_dir: str | Path | None = None,
    threads: int | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> GroupResult:
    """Rule train: load the store, train the group, write ``model.pt`` and ``train.json`` (the training record
    with the members' run_ids)."""
    from .datamodule import ArrayDataModule
    from .provenance import package_versions, write_json
    from .training import model_meta
    from .vae import save_trained

    start = time.perf_counter()
    data = ArrayDataModule.from_store(store)
    group = train_group(
        data, settings, Ts, model_id=model_id, seed=seed, run_dir=Path(model_path).parent,
        checkpoint_dir=checkpoint_dir, log_dir=log_dir, threads=threads, progress=progress,
    )
    save_trained(model_path, group.model, {**model_meta(group.record, group.run_ids), "model": model_id})
    group.record = {**group.record, "model": model_id, "run_ids": group.run_ids,
                    "package_versions": package_versions(), "job_time_s": time.perf_counter() - start,
                    **dict(extra or {})}
    write_json(record_path, group.record)
    return group


def measure_group_job(
    store: str | Path,
    model_path: str | Path,
    record_path: str | Path,
    *,
    latents_path: str | Path,
    pruning_path: str | Path,
    run_path: str | Path,
    splits: Sequence[str],
    active_threshold: float,
    stability: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> GroupResult:
    """Rule measure: measure every member of a trained group on ``splits`` (each held-out mean weighted by
    cell area) and write the latents / pruning tables and ``run.json`` (never retrains). Runs on the GPU when
    there is one (the same tables as on the CPU up to float rounding: measure.measure_split).

    ``stability`` (``analysis.stability_check``; None or enabled false: not checked): then every member is
    probed from the collapsed side (``stability.stability_check``) after it is measured, on a copy, and
    run.json's runs get ``stability``. Here, not at the end of the train job: a probe is a measurement (its
    settings change never retrains), it is deterministic from model.pt and its seed (a rerun of an interrupted
    measure job gives the same records, no checkpoint needed), and model.pt stays the measured model."""
    import torch

    from .allocator import keep_freed_memory
    from .datamodule import ArrayDataModule
    from .provenance import package_versions, sha256_file, write_json, write_parquet
    from .stability import StabilitySettings
    from .store import HELDOUT_WEIGHTING, load_split, load_weights
    from .vae import load_trained

    keep_freed_memory()  # a job: no page faults on every block's activations (allocator.py)
    start = time.perf_counter()
    model, _ = load_trained(model_path)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    record = json.loads(Path(record_path).read_text())
    group = GroupResult(record=record, model=model, run_ids=list(record["run_ids"]))
    settings = StabilitySettings.from_config(stability if stability is not None else {"enabled": False})
    # The probe trains, so it needs every split as a datamodule: then the measured splits are read from it (once).
    dm = ArrayDataModule.from_store(store) if settings.enabled else None
    data = {s: (load_split(store, s) if dm is None else dm.split(s).numpy()) for s in splits}
    weights = {s: load_weights(store, s) for s in splits}
    measure_group(group, data, model_id=record["model"], active_threshold=active_threshold, weights=weights)
    measured_s = time.perf_counter() - start
    check = probe_group(group, dm, active_threshold, settings) if dm is not None else {"enabled": False}
    write_parquet(group.latents, latents_path)
    write_parquet(group.pruning, pruning_path)
    group.run.update({
        "stability_check": check,
        "measured_splits": list(splits),
        "active_threshold": active_threshold,
        "heldout_weighting": HELDOUT_WEIGHTING,
        "package_versions": package_versions(),
        "model_sha256": sha256_file(model_path),
        "measure_time_s": time.perf_counter() - start,
        "measure_device": str(model.log_sigma2.device),
        **dict(extra or {}),
    })
    group.run["measure_only_time_s"] = measured_s
    write_json(run_path, group.run)
    return group


def probe_group(group: GroupResult, data: Any, active_threshold: float, settings: Any) -> dict[str, Any]:
    """The stability check of every member of a measured group (``stability.stability_check``) on the
    datamodule ``data``, added to ``group.run["runs"][e]["stability"]``; returns the settings used with
    enabled and time_s (run.json's ``stability_check``)."""
    from .stability import member_lrs, probe_seed, stability_check

    start = time.perf_counter()
    record, members = group.record, group.record["members"]
    seed = probe_seed(settings, int(record["seed"]))
    results = stability_check(
        group.model, data, data.val_tensor.cpu().numpy(), data.weights["validation"].cpu().numpy(),
        T_grid=[m["T_grid"] for m in members], beta=[m["beta"] for m in members], lrs=member_lrs(record),
        batch_size=int(record["training"]["batch_size"]), tolerance=float(record["training"]["tolerance"]),
        active_threshold=active_threshold, settings=settings, seed=seed,
    )
    for run, result in zip(group.run["runs"], results):
        run["stability"] = result
    return {"enabled": True, "updates": settings.updates, "scale": settings.scale, "seed": settings.seed,
            "probe_seed": seed, "split": "validation", "time_s": time.perf_counter() - start}
