"""Lightning callbacks of a training job: when a member has converged, atomic resumable checkpoints, one
log line per evaluation, and a progress line every few seconds for the terminal.

Their order in the Trainer matters and is the order of ``training.train``'s list: ``Convergence`` first (it
decides on each evaluation), then ``EvalLinePrinter`` (prints that decision), then ``AtomicLastCheckpoint``
(saves the state including it).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

LAST = "last.ckpt"
# Written next to last.ckpt when a training ran to the end: its checkpoint is then never resumed.
FINISHED = "finished"


class Convergence(pl.Callback):
    """The convergence rule, per ensemble member, and what follows from it (docs/science.md section 4).

    The validation loss (fixed evaluation noise, so successive evaluations are comparable) is evaluated every
    ``eval_every`` updates. A member has converged when the relative improvement of its best validation loss
    over its last ``patience_evals`` evaluations is below ``tolerance``. Then, while it has annealing steps
    left (``lr_drops``), its learning rate is multiplied by ``lr_drop_factor`` and its convergence window
    restarts; otherwise it is frozen: it stops training (the system no longer computes it) and its record is
    final. Each member thus follows the schedule it would follow as a job of its own. Training stops when
    every member is frozen, else at the update budget. ``freeze=False`` (benchmarks: what freezing saves) keeps
    a converged member training at its last learning rate until every member has converged.

    The state (evaluation history, annealing steps done, windows, convergence steps) is this callback's
    ``state_dict``, saved in every checkpoint, so a resumed job continues the same decisions.
    """

    def __init__(self, members: int, *, tolerance: float, patience_evals: int, lr_drops: int,
                 lr_drop_factor: float, freeze: bool) -> None:
        self.tolerance, self.patience, self.freeze = float(tolerance), max(1, int(patience_evals)), bool(freeze)
        self.lr_drops, self.lr_drop_factor = int(lr_drops), float(lr_drop_factor)
        self.history: list[dict[str, Any]] = []  # step, val_loss, val_D, val_R, train_loss (E), m2 (E, L); None: frozen
        self.drops_done = [0] * members
        self.window_start = [0] * members  # index into history where a member's current window starts
        self.converged_at: list[int | None] = [None] * members  # update at which a member froze

    @classmethod
    def from_settings(cls, members: int, settings: Any) -> "Convergence":
        """The rule of a job's ``settings.TrainingSettings`` (defaults: the config schema's)."""
        return cls(members, tolerance=settings.tolerance, patience_evals=settings.patience_evals,
                   lr_drops=settings.lr_drops, lr_drop_factor=settings.lr_drop_factor,
                   freeze=settings.freeze_converged)

    @property
    def frozen(self) -> list[bool]:
        return [c is not None for c in self.converged_at]

    def member_lr(self, base: float) -> list[float]:
        """Each member's learning rate: ``base`` times the factor once per annealing step it has done."""
        out = []
        for drops in self.drops_done:
            lr = base
            for _ in range(drops):
                lr *= self.lr_drop_factor
            out.append(lr)
        return out

    def training(self) -> list[bool]:
        """Which members still train: those not frozen (with ``freeze=False``, all)."""
        return [not f or not self.freeze for f in self.frozen]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.set_members(self.training(), self.member_lr(pl_module.lr))
        if all(self.frozen):
            trainer.should_stop = True  # a finished job restarted from its last checkpoint

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or pl_module.last_eval is None:
            return
        entry = pl_module.last_eval
        self.history.append(entry)
        changed = False
        for e, frozen in enumerate(self.frozen):
            if frozen or not self._converged(e):
                continue
            changed = True
            if self.drops_done[e] < self.lr_drops:
                self.drops_done[e] += 1
                self.window_start[e] = len(self.history)
            else:
                self.converged_at[e] = entry["step"]
        if changed:
            pl_module.set_members(self.training(), self.member_lr(pl_module.lr))
        if all(self.frozen):
            trainer.should_stop = True

    def _converged(self, e: int) -> bool:
        losses = np.array([h["val_loss"][e] for h in self.history[self.window_start[e]:]], dtype=float)
        if len(losses) <= self.patience:
            return False
        best_before = losses[: -self.patience].min()
        return bool((best_before - losses.min()) / abs(best_before) < self.tolerance)

    def m2_drift(self, members: int, latents: int) -> np.ndarray:
        """|d M^2 / d log(updates)| per member and latent over its last patience window, (E, L); NaN when a
        member has fewer than two evaluations."""
        out = np.full((members, latents), np.nan)
        for e in range(members):
            seen = [h for h in self.history if h["m2"][e] is not None]
            if len(seen) < 2:
                continue
            last, first = seen[-1], seen[max(0, len(seen) - 1 - self.patience)]
            dlog = math.log(max(last["step"], 1)) - math.log(max(first["step"], 1))
            if dlog > 0:
                out[e] = np.abs(np.array(last["m2"][e]) - np.array(first["m2"][e])) / dlog
        return out

    def last_evaluated(self, e: int) -> dict[str, Any] | None:
        """The member's values at its last evaluation (before it froze)."""
        for h in reversed(self.history):
            if h["val_loss"][e] is not None:
                return {k: h[k][e] for k in ("val_loss", "val_D", "val_R", "train_loss")} | {"step": h["step"]}
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "drops_done": self.drops_done, "window_start": self.window_start,
                "converged_at": self.converged_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
        self.drops_done = list(state_dict["drops_done"])
        self.window_start = list(state_dict["window_start"])
        self.converged_at = list(state_dict["converged_at"])


class AtomicLastCheckpoint(pl.Callback):
    """Save ``last.ckpt`` after every validation (= every ``eval_every`` updates), atomically.

    The checkpoint also holds what a resumed job needs to continue bit for bit: the global and CUDA random
    generator states (the reparametrisation noise; batches are re-derived from (seed, epoch)), and the
    ``fingerprint`` of the job's settings, so that a checkpoint of other settings is never continued.
    """

    def __init__(self, dirpath: str | os.PathLike, fingerprint: str) -> None:
        self.dirpath, self.fingerprint = Path(dirpath), fingerprint

    @property
    def state_key(self) -> str:
        return "AtomicLastCheckpoint"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        tmp = self.dirpath / f".{LAST}.tmp"
        trainer.save_checkpoint(tmp)
        os.replace(tmp, self.dirpath / LAST)

    def state_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch_rng"])
        if state_dict.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda_rng"])

    @classmethod
    def resumable(cls, path: Path, fingerprint: str) -> bool:
        """Whether ``path`` is a readable checkpoint written with these settings."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)["callbacks"]["AtomicLastCheckpoint"]
        except Exception:  # noqa: BLE001 - unreadable (e.g. truncated by a crash) or of an older layout
            return False
        return state.get("fingerprint") == fingerprint


class StepTimer(pl.Callback):
    """The measured cost of an update between evaluations, and how many members were frozen during it: the
    training record's ``ms_per_step_all_members`` (what every update would cost without freezing; the bundle's
    wall-time estimate) comes from here, not from a printed line."""

    def __init__(self, convergence: Convergence) -> None:
        self.convergence = convergence
        self.intervals: list[tuple[float, int]] = []  # (ms per update, members frozen during the interval)
        self._t0, self._step0, self._frozen = time.perf_counter(), 0, 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0, self._step0 = time.perf_counter(), trainer.global_step
        self._frozen = sum(self.convergence.frozen)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        now, step = time.perf_counter(), trainer.global_step
        if step > self._step0:
            self.intervals.append((1e3 * (now - self._t0) / (step - self._step0), self._frozen))
        self._t0, self._step0, self._frozen = now, step, sum(self.convergence.frozen)

    def last_ms(self) -> float | None:
        """ms per update over the last interval (evaluation included); None before the first."""
        return self.intervals[-1][0] if self.intervals else None

    def all_members_ms(self) -> float | None:
        """Median ms per update over the intervals with no member frozen (None: there were none)."""
        times = sorted(ms for ms, frozen in self.intervals if frozen == 0)
        return float(times[len(times) // 2]) if times else None


class EvalLinePrinter(pl.Callback):
    """One line per evaluation when stdout is not a terminal (no progress bar)."""

    def __init__(self, convergence: Convergence, timer: StepTimer, run_name: str, max_updates: int) -> None:
        self.convergence, self.timer, self.run_name, self.max_updates = convergence, timer, run_name, max_updates

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.convergence.history:
            return
        h = self.convergence.history[-1]
        ms = self.timer.last_ms()  # the timer runs before this callback: the interval just ended
        loss = ", ".join("-" if v is None else f"{v:.5g}" for v in h["val_loss"])
        frozen = self.convergence.frozen
        print(f"[{self.run_name}] step {trainer.global_step}/{self.max_updates} val_loss {loss} "
              f"converged {sum(frozen)}/{len(frozen)} ({0.0 if ms is None else ms:.2f} ms/step)", flush=True)


def _duration(seconds: float) -> str:
    """A short human duration: 45s, 3m05s, 1h02m."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def progress_line(job: str, step: int, budget: int, converged: int, members: int, losses: list[float],
                  seconds_left: float | None, finished: bool = False) -> str:
    """The one-line status of a training job for the terminal (the full record stays in the rule's log):
    job, updates done / budget, members converged / total, lowest and median validation loss over the members'
    last evaluations, and the time left if the job runs to its budget (an upper bound: it stops sooner when
    every member has converged)."""
    finite = [v for v in losses if v is not None and math.isfinite(v)]
    loss = (f"val_loss min {min(finite):.5g} median {float(np.median(finite)):.5g}" if finite
            else "val_loss - (no evaluation yet)")
    left = ("training finished" if finished else "time left: estimating" if seconds_left is None
            else f"<= {_duration(seconds_left)} left")
    pct = 100.0 * step / budget if budget else 0.0
    return (f"[train {job}] updates {step}/{budget} ({pct:.0f}%), converged {converged}/{members}, {loss}, "
            f"{left}")


class ProgressLine(pl.Callback):
    """One status line (``progress_line``) every ``interval`` seconds of wall time to ``stream``, the terminal
    of whoever started the workflow (``rulelog.terminal_stream``), while the rule's log keeps the full
    per-evaluation record. A background thread writes it, so the line keeps coming while a Lightning batch
    (``eval_every`` updates, possibly many seconds) runs; it reads only counters the training loop updates.
    The estimate of the time left uses the update rate over about the last ``rate_window`` seconds (it rises
    as members converge and freeze)."""

    def __init__(self, convergence: Convergence, job: str, budget: int, stream, interval: float = 5.0,
                 rate_window: float = 60.0, clock=time.monotonic) -> None:
        self.convergence, self.job, self.budget, self.stream = convergence, job, int(budget), stream
        self.interval, self.rate_window, self.clock = float(interval), float(rate_window), clock
        self._samples: list[tuple[float, int]] = []
        self._last: float | None = None
        self._trainer: pl.Trainer | None = None
        self._stop = None
        self._thread = None

    def line(self, step: int, now: float, finished: bool = False) -> str:
        """The status line at update ``step``, time ``now``; records the sample for the rate."""
        self._samples.append((now, step))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.rate_window:
            self._samples.pop(0)
        t0, s0 = self._samples[0]
        rate = (step - s0) / (now - t0) if now > t0 and step > s0 else None
        left = (self.budget - step) / rate if rate else None
        conv = self.convergence
        members = len(conv.converged_at)
        losses = [(conv.last_evaluated(e) or {}).get("val_loss") for e in range(members)]
        return progress_line(self.job, step, self.budget, sum(conv.frozen), members, losses, left, finished)

    def tick(self, step: int, force: bool = False, finished: bool = False) -> bool:
        """Write the line if ``interval`` has passed since the last one (or ``force``); whether it wrote."""
        now = self.clock()
        if not force and self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        try:
            self.stream.write(self.line(step, now, finished) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away (closed, redirected): training goes on
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            if self._trainer is not None:
                self.tick(int(self._trainer.global_step))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import threading

        self._trainer = trainer
        self._samples.clear()
        self.tick(int(trainer.global_step), force=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress {self.job}", daemon=True)
        self._thread.start()

    def _finish(self, trainer: pl.Trainer) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.tick(int(trainer.global_step), force=True, finished=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._finish(trainer)
