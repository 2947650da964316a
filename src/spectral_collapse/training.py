"""One training job: Trainer construction, resume, convergence status, NaN guard, ``train.json``.

Python entry point (arrays or store, settings as plain dicts)::

    from spectral_collapse.datamodule import ArrayDataModule
    from spectral_collapse.training import train
    dm = ArrayDataModule(x_train, x_val, x_test, batch_size=1024, eval_every=200, seed=0)
    result = train(dm, {"family": "linear", "latents": 5}, T=0.1,
                   settings={"lr": 1e-2, "max_updates": 4000, "tolerance": 1e-4,
                             "patience_fraction": 0.2, "eval_every": 200, "batch_size": 1024},
                   seed=0, run_dir="results/runs/x")   # run_dir=None: a temporary folder
    result.model       # trained VAE (cpu, eval mode); result.summary: the train.json dict

``T`` may be a list (vectorized ensemble, one member per value; ``vae`` is then built with E = len(T)).

Settings: the six keys of the config's training block, plus optional ``lr_drops`` (default 0) and
``lr_drop_factor`` (0.1): on convergence, anneal the learning rate and re-check convergence that many times
(used by the oracle tests; the study's config leaves it off).
"""

from __future__ import annotations

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

from .allocator import keep_freed_memory
from .datamodule import ArrayDataModule
from .provenance import config_hash
from .lightning_module import BetaVAEModule, NonFiniteLossError  # noqa: F401  (re-exported)
from .vae import VAE, VAEConfig

TRAINING_KEYS = ("batch_size", "lr", "max_updates", "tolerance", "patience_fraction", "eval_every")
OPTIONAL_KEYS = {"lr_drops": 0, "lr_drop_factor": 0.1}  # annealing on convergence; off by default
LAST = "last.ckpt"
# Lightning logs "`weights_only` was not set" at INFO on every checkpoint save: noise in one-line-per-eval logs.
logging.getLogger("pytorch_lightning.trainer.connectors.checkpoint_connector").setLevel(logging.WARNING)


@dataclass
class TrainResult:
    model: VAE
    summary: dict[str, Any]
    module: BetaVAEModule = field(repr=False)


class AtomicLastCheckpoint(pl.Callback):
    """Save ``last.ckpt`` after every validation (= every ``eval_every`` updates), atomically."""

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = Path(dirpath)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        tmp = self.dirpath / f".{LAST}.tmp"
        trainer.save_checkpoint(tmp)
        os.replace(tmp, self.dirpath / LAST)


class EvalLinePrinter(pl.Callback):
    """One line per evaluation when stdout is not a terminal (no progress bar)."""

    def __init__(self, run_name: str, max_updates: int) -> None:
        self.run_name, self.max_updates = run_name, max_updates
        self._t0 = time.perf_counter()
        self._step0 = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0, self._step0 = time.perf_counter(), trainer.global_step

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not pl_module.history:
            return
        h = pl_module.history[-1]
        now = time.perf_counter()
        elapsed, done = now - self._t0, max(trainer.global_step - self._step0, 1)
        self._t0, self._step0 = now, trainer.global_step  # rate over the last interval (evaluation included)
        loss = ", ".join(f"{v:.5g}" for v in h["val_loss"])
        n_conv = sum(c is not None for c in pl_module.converged_at)
        print(
            f"[{self.run_name}] step {trainer.global_step}/{self.max_updates} val_loss {loss} "
            f"converged {n_conv}/{len(pl_module.converged_at)} ({1e3 * elapsed / done:.2f} ms/step)",
            flush=True,
        )


def training_settings_from(settings: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in TRAINING_KEYS if k not in settings]
    if missing:
        raise ValueError(f"training settings lack {missing}")
    out = {k: settings[k] for k in TRAINING_KEYS}
    out.update({k: settings.get(k, v) for k, v in OPTIONAL_KEYS.items()})
    out["max_updates"] = int(out["max_updates"])
    out["eval_every"] = int(out["eval_every"])
    out["batch_size"] = int(out["batch_size"])
    return out


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
) -> TrainResult:
    """Train one scan point (or a vectorized ensemble of points) and return the model and summary.

    Checkpoints go to ``checkpoint_dir`` (default ``run_dir/checkpoints``), CSV logs to ``log_dir``
    (default ``run_dir/logs``). With ``resume`` and an existing ``last.ckpt`` there, training continues
    from it. A NaN/inf loss raises ``NonFiniteLossError`` naming the run and the step.
    """
    t_start = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    keep_freed_memory()  # no page faults on every update's activations (allocator.py)
    st = training_settings_from(settings)
    Ts = [float(t) for t in (T if isinstance(T, (list, tuple, np.ndarray)) else [T])]
    cfg = vae if isinstance(vae, VAEConfig) else VAEConfig(**{"n_features": data.n_features, **dict(vae)})
    if cfg.ensemble != len(Ts):
        cfg = VAEConfig(**{**asdict(cfg), "ensemble": len(Ts)})
    if cfg.n_features != data.n_features:
        raise ValueError(f"model expects {cfg.n_features} features, data has {data.n_features}")
    data.batch_size, data.eval_every, data.seed = st["batch_size"], st["eval_every"], int(seed)

    tmpdir = None
    if run_dir is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="bvae-")
        run_dir = tmpdir.name
    run_dir = Path(run_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else run_dir / "checkpoints"
    log_dir = Path(log_dir) if log_dir else run_dir / "logs"
    run_name = run_name or str(run_dir)
    if progress is None:
        progress = sys.stdout.isatty()

    pl.seed_everything(int(seed), workers=True, verbose=False)
    module = BetaVAEModule(
        asdict(cfg), Ts, data.V, lr=st["lr"], max_updates=st["max_updates"], eval_every=st["eval_every"],
        tolerance=st["tolerance"], patience_fraction=st["patience_fraction"], run_name=run_name,
        lr_drops=int(st["lr_drops"]), lr_drop_factor=float(st["lr_drop_factor"]),
    )
    module.fingerprint = config_hash({"vae": asdict(cfg), "T": Ts, "V": data.V, "seed": int(seed), "training": st})
    from lightning_fabric.plugins.environments import LightningEnvironment
    from pytorch_lightning.loggers import CSVLogger

    callbacks: list[pl.Callback] = [AtomicLastCheckpoint(checkpoint_dir)]
    if not progress:
        callbacks.append(EvalLinePrinter(run_name, st["max_updates"]))
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=st["max_updates"],
        max_epochs=-1,
        deterministic=True,
        logger=CSVLogger(save_dir=str(log_dir), name="", version=""),
        log_every_n_steps=1,  # one Lightning batch = one chunk of eval_every updates (issue 6)
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=bool(progress),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1,
        # One process, one device: never let Lightning treat a SLURM allocation as a multi-task cluster.
        plugins=[LightningEnvironment()],
    )
    ckpt = checkpoint_dir / LAST
    ckpt_path = str(ckpt) if (resume and ckpt.exists()) else None
    if ckpt_path is not None and not _checkpoint_matches(ckpt, module.fingerprint):
        # A checkpoint of other settings (config changed since): never continue it; start afresh.
        print(f"[{run_name}] {ckpt} was written with other settings; discarding it and starting afresh", flush=True)
        ckpt.unlink()
        ckpt_path = None
    t_fit = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    fit_s = time.perf_counter() - t_fit

    model = module.vae.cpu().eval()
    data.place("cpu")
    summary = _summary(module, trainer, cfg, Ts, data, int(seed), st, run_name)
    summary["wall_time_s"] = time.perf_counter() - t_start
    steps_run = max(int(trainer.global_step) - module.resumed_from_step, 1)
    summary["ms_per_step"] = 1e3 * fit_s / steps_run
    if tmpdir is not None:
        tmpdir.cleanup()
    return TrainResult(model=model, summary=summary, module=module)


def _checkpoint_matches(path: Path, fingerprint: str) -> bool:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False).get("beta_vae_state", {})
    except Exception:  # noqa: BLE001 - unreadable (e.g. truncated by a crash): not resumable
        return False
    return state.get("fingerprint") == fingerprint


def _summary(module, trainer, cfg: VAEConfig, Ts, data, seed, st, run_name) -> dict[str, Any]:
    E = cfg.ensemble
    updates = int(trainer.global_step)
    drift = module.m2_drift()
    sigma2 = module.vae.sigma2.detach().cpu().numpy().astype(float)
    beta = module.beta.detach().cpu().numpy().astype(float)
    last = module.history[-1] if module.history else {}
    members = []
    for e in range(E):
        status = "converged" if module.converged_at[e] is not None else "budget"
        members.append({
            "T": Ts[e],
            "beta": float(beta[e]),
            "sigma_dec2": float(sigma2[e]),
            "T_eff": float(beta[e] * sigma2[e] / data.V),
            "status": status,
            "converged_at": module.converged_at[e],
            "m2_drift": drift[e].tolist(),
            "final": {k: (last[k][e] if last else None) for k in ("val_loss", "val_D", "val_R", "train_loss")},
        })
    common = {
        "run_name": run_name,
        "V": float(data.V),
        "seed": seed,
        "family": cfg.family,
        "depth": cfg.depth,
        "latents": cfg.latents,
        "decoder_variance": "learned" if cfg.learned_variance else "fixed",
        "sigma_dec2_init": float(cfg.sigma2),
        "updates": updates,
        "resumed_from_step": int(module.resumed_from_step),
        "n_evaluations": len(module.history),
        "lr_drops_done": int(module.drops_done),
        "training": dict(st),
        "hparams": asdict(cfg),
        "n_train": int(len(data.train_tensor)),
        "data_source": data.source,
        "device": str(module.device),
    }
    if E == 1:
        return {**common, **members[0]}
    return {**common, "members": members, "T": list(Ts), "beta": beta.tolist()}


def model_meta(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What ``model.pt`` stores beside the weights (contracts.md section 3)."""
    return {k: summary.get(k) for k in ("T", "beta", "V", "seed", "sigma_dec2", "T_eff", "family", "depth")}
