"""One training job: Trainer construction, resume, convergence status, NaN guard, the training record.

Python entry point (arrays or store, settings as plain dicts)::

    from spectral_collapse.datamodule import ArrayDataModule
    from spectral_collapse.training import train
    dm = ArrayDataModule(x_train, x_val, x_test, batch_size=1024, eval_every=200, seed=0)
    result = train(dm, {"family": "linear", "latents": 5}, T=[0.1, 0.01],
                   settings={"lr": 1e-2, "max_updates": 4000, "tolerance": 1e-4,
                             "patience_fraction": 0.2, "eval_every": 200, "batch_size": 1024},
                   seed=0, run_dir="results/runs/x")   # run_dir=None: a temporary folder
    result.model       # trained VAE (cpu, eval mode); result.record: the train.json dict

``T`` is a group of scan points (a float is a group of one): the VAE is built with one ensemble member per
point, and every member is judged, annealed and frozen on its own (``callbacks.Convergence``).

Settings: ``settings.TrainingSettings`` or a mapping of the config's training block (its six required keys; the
others, ``lr_drops``, ``lr_drop_factor``, ``freeze_converged`` and ``chain``, default to the config schema's
values): on convergence, anneal the member's learning rate and re-check convergence ``lr_drops`` times before
freezing it; with ``freeze_converged`` false a converged member trains on until every member has converged.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from . import oracle
from .allocator import keep_freed_memory
from .callbacks import FINISHED, LAST, AtomicLastCheckpoint, Convergence, EvalLinePrinter, ProgressLine, StepTimer
from .datamodule import ArrayDataModule
from .lightning_module import BetaVAESystem, NonFiniteLossError  # noqa: F401  (re-exported)
from .provenance import config_hash
from .rulelog import terminal_stream
from .settings import TrainingSettings
from .vae import VAE, VAEConfig

# Lightning logs "`weights_only` was not set" at INFO on every checkpoint save: noise in one-line-per-eval logs.
logging.getLogger("pytorch_lightning.trainer.connectors.checkpoint_connector").setLevel(logging.WARNING)


@dataclass
class TrainResult:
    model: VAE
    record: dict[str, Any]
    system: BetaVAESystem = field(repr=False)


@functools.lru_cache(maxsize=1)
def training_code_hash() -> str:
    """A hash of the source of the training path (this module and every spectral_collapse module it and
    group.py import), part of the checkpoint fingerprint: a checkpoint written by other training code is
    never continued."""
    from .codefiles import package_files

    here = Path(__file__).resolve()
    digest = hashlib.sha256()
    for name, path in sorted((_package_name(p), p) for p in package_files([here, here.with_name("group.py")])):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _package_name(path: Path) -> str:
    """`spectral_collapse/vae.py` for any checkout's copy: the same code hashes the same anywhere."""
    parts = path.parts
    if "spectral_collapse" not in parts:
        return path.name
    return "/".join(parts[len(parts) - 1 - parts[::-1].index("spectral_collapse"):])


def train(
    data: ArrayDataModule,
    vae: VAEConfig | Mapping[str, Any],
    T: float | Sequence[float],
    *,
    settings: Mapping[str, Any],
    seed: int = 0,
    run_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    run_name: str | None = None,
    threads: int | None = None,
    progress: bool | None = None,
    accelerator: str = "auto",
    resume: bool = True,
    extra_callbacks: Sequence[pl.Callback] = (),
    init_state: Mapping[str, torch.Tensor] | None = None,
    init_key: str | None = None,
) -> TrainResult:
    """Train a group of scan points (one ensemble member each) and return the model and the training record.

    Checkpoints go to ``checkpoint_dir`` (default ``run_dir/checkpoints``), CSV logs to ``log_dir``
    (default ``run_dir/logs``). With ``resume`` and an existing ``last.ckpt`` of an interrupted training with
    the same settings and training code (``training_code_hash``) there, training continues from it; the
    checkpoint of a training that ran to the end is never continued (a rerun trains afresh). A NaN/inf loss raises ``NonFiniteLossError`` naming the run and the step.
    ``extra_callbacks`` (benchmarks, tests) run after the job's own.
    ``init_state``: start from these weights (a ``state_dict`` of the same VAE) instead of the initialisation
    (the warm-start chain, ``chain.train_chain``); ``init_key`` names them in the checkpoint fingerprint, so a
    checkpoint of a run started from other weights is never continued.
    """
    t_start = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    keep_freed_memory()  # no page faults on every update's activations (allocator.py)
    st = TrainingSettings.from_mapping(settings)
    Ts = [float(t) for t in (T if isinstance(T, (list, tuple, np.ndarray)) else [T])]
    cfg = vae if isinstance(vae, VAEConfig) else VAEConfig.build(n_features=data.n_features, **dict(vae))
    cfg = cfg.with_ensemble(len(Ts))
    if cfg.n_features != data.n_features:
        raise ValueError(f"model expects {cfg.n_features} features, data has {data.n_features}")
    data.batch_size, data.eval_every, data.seed = st.batch_size, st.eval_every, int(seed)

    tmpdir = tempfile.TemporaryDirectory(prefix="bvae-") if run_dir is None else None
    run_dir = Path(tmpdir.name if tmpdir else run_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else run_dir / "checkpoints"
    log_dir = Path(log_dir) if log_dir else run_dir / "logs"
    run_name = run_name or str(run_dir)
    if progress is None:
        progress = sys.stdout.isatty()

    pl.seed_everything(int(seed), workers=True, verbose=False)
    vae_model = VAE(cfg)
    if init_state is not None:
        if init_key is None:
            raise ValueError("init_state needs an init_key (it enters the checkpoint fingerprint)")
        vae_model.load_state_dict(init_state)
    system = BetaVAESystem(vae_model, Ts, data.V, lr=st.lr, run_name=run_name)
    identity = {"vae": asdict(cfg), "T": Ts, "V": data.V, "seed": int(seed), "training": st.as_dict(),
                "code": training_code_hash()}
    fingerprint = config_hash(identity if init_key is None else {**identity, "init": init_key})
    convergence = Convergence.from_settings(len(Ts), st)
    timer = StepTimer(convergence)
    callbacks: list[pl.Callback] = [convergence, timer]  # first: the others report and save its decisions
    if not progress:
        callbacks.append(EvalLinePrinter(convergence, timer, run_name, st.max_updates))
        if terminal_stream() is not None:  # a rule script: its output goes to the log, this line to the terminal
            callbacks.append(ProgressLine(convergence, run_name, st.max_updates, terminal_stream()))
    callbacks.append(AtomicLastCheckpoint(checkpoint_dir, fingerprint))
    callbacks.extend(extra_callbacks)  # after the job's own: they see each evaluation's decisions and checkpoint
    from lightning_fabric.plugins.environments import LightningEnvironment
    from pytorch_lightning.loggers import CSVLogger

    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=st.max_updates,
        max_epochs=-1,
        deterministic=True,
        logger=CSVLogger(save_dir=str(log_dir), name="", version=""),
        log_every_n_steps=1,  # one Lightning batch = eval_every updates
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=bool(progress),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1,
        # One process, one device: never let Lightning treat a SLURM allocation as a multi-task cluster.
        plugins=[LightningEnvironment()],
    )
    ckpt, finished = checkpoint_dir / LAST, checkpoint_dir / FINISHED
    ckpt_path = str(ckpt) if (resume and ckpt.exists()) else None
    if ckpt_path is not None and finished.exists():
        # The checkpoint of a job that ran to the end: running it again means a forced or code-triggered
        # rerun, whose point is to train afresh (issue 23), never to relabel the old weights.
        print(f"[{run_name}] {ckpt} is of a finished training; a rerun trains afresh", flush=True)
        ckpt_path = None
    elif ckpt_path is not None and not AtomicLastCheckpoint.resumable(ckpt, fingerprint):
        # A checkpoint of other settings or other training code: never continue it; start afresh.
        print(f"[{run_name}] {ckpt} was written with other settings or training code; discarding it and "
              "starting afresh", flush=True)
        ckpt_path = None
    if ckpt_path is None:
        ckpt.unlink(missing_ok=True)
    finished.unlink(missing_ok=True)
    t_fit = time.perf_counter()
    trainer.fit(system, datamodule=data, ckpt_path=ckpt_path)
    fit_s = time.perf_counter() - t_fit
    if checkpoint_dir.is_dir():  # only an interrupted training (kill -9, node loss) is ever resumed
        finished.write_text(fingerprint + "\n")

    model = system.vae.cpu().eval()
    data.place("cpu")
    record = _record(system, trainer, convergence, cfg, Ts, data, int(seed), st, run_name)
    record["wall_time_s"] = time.perf_counter() - t_start
    steps_run = max(int(trainer.global_step) - system.resumed_from_step, 1)
    record["ms_per_step"] = 1e3 * fit_s / steps_run
    record["ms_per_step_all_members"] = timer.all_members_ms()
    if tmpdir is not None:
        tmpdir.cleanup()
    return TrainResult(model=model, record=record, system=system)


def _record(system: BetaVAESystem, trainer: pl.Trainer, convergence: Convergence, cfg: VAEConfig, Ts, data,
            seed: int, st: TrainingSettings, run_name: str) -> dict[str, Any]:
    """The training record (train.json): settings and provenance shared by the group, one entry per member."""
    E, steps = cfg.ensemble, int(trainer.global_step)
    drift = convergence.m2_drift(E, cfg.latents)
    sigma2 = system.vae.sigma2.detach().cpu().numpy().astype(float)
    beta = system.beta.detach().cpu().numpy().astype(float)
    members = []
    for e in range(E):
        done = convergence.converged_at[e]
        T_eff = float(oracle.T_of_beta(beta[e], data.V, sigma2[e]))
        members.append({
            "T_grid": Ts[e],
            # the run's temperature: the scan point, or with a learned decoder variance beta sigma_dec^2 / V
            "T": T_eff if cfg.learned_variance else Ts[e],
            "T_eff": T_eff,
            "beta": float(beta[e]),
            "sigma_dec2": float(sigma2[e]),
            "status": "converged" if done is not None else "budget",
            "converged_at": done,
            "updates": int(done if done is not None and convergence.freeze else steps),
            "lr_drops_done": int(convergence.drops_done[e]),
            "m2_drift": drift[e].tolist(),
            "final": convergence.last_evaluated(e),
        })
    point_updates = sum(m["updates"] for m in members)
    return {
        "run_name": run_name,
        "V": float(data.V),
        "seed": seed,
        "family": cfg.family,
        "depth": cfg.depth,
        "updates": steps,
        "point_updates": point_updates,  # updates computed, summed over members (frozen members cost none)
        "point_updates_unfrozen": E * steps,  # what the same job costs if no member were ever frozen
        "resumed_from_step": int(system.resumed_from_step),
        "n_evaluations": len(convergence.history),
        "training": st.as_dict(),  # the job's settings, recorded once: its schedule and its model (hparams)
        "hparams": asdict(cfg),
        "n_train": int(len(data.train_tensor)),
        "data_source": data.source,
        "device": str(system.device),
        "members": members,
    }


def model_meta(record: Mapping[str, Any], run_ids: Sequence[str]) -> dict[str, Any]:
    """What ``model.pt`` stores beside the weights and their ``hparams`` (contracts.md section 3): per-member
    lists."""
    members = record["members"]
    out = {k: [m[k] for m in members] for k in ("T", "T_grid", "beta", "sigma_dec2", "T_eff")}
    return {**out, "V": record["V"], "seed": record["seed"], "run_id": list(run_ids)}
