"""The LightningModule that owns the beta-VAE loss (STUDY.md section 2) and the convergence rule.

loss_e = D_e + beta_e R_e  (+ (d/2) log sigma_dec^2 when the decoder variance is learned), per ensemble
member e; the optimised objective is the SUM over members, so every member's gradient is its own.

beta = T V / sigma_dec^2. With a learned decoder variance, beta is fixed at T V / sigma2_init (the
initial value) and the summary reports the effective T_eff = beta sigma2_learned / V as well.

Convergence (issue 3): the validation loss (fixed evaluation noise, so successive evaluations are
comparable) is evaluated every ``eval_every`` updates; a member has converged when the relative
improvement of its best validation loss over the last ``patience`` updates is below ``tolerance``.
Training stops when every member has converged, else at the update budget.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from .vae import VAE, VAEConfig, negative_elbo_terms


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite; names the run and the step."""


class BetaVAEModule(pl.LightningModule):
    def __init__(
        self,
        vae_config: dict[str, Any],
        T: Sequence[float],
        V: float,
        *,
        lr: float,
        max_updates: int,
        eval_every: int,
        tolerance: float,
        patience_fraction: float,
        run_name: str = "run",
        lr_drops: int = 0,
        lr_drop_factor: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Manual optimisation: zero_grad / backward / step with no closure machinery (per-step overhead
        # dominates these tiny models). One optimizer step = one update = one global_step.
        self.automatic_optimization = False
        self.vae = VAE(VAEConfig(**vae_config))
        E = self.vae.ensemble
        T = [float(t) for t in (T if isinstance(T, (list, tuple, np.ndarray)) else [T])]
        if len(T) != E:
            raise ValueError(f"{len(T)} temperatures for an ensemble of {E}")
        self.T = T
        self.V = float(V)
        sigma2_init = float(self.vae.config.sigma2)
        self.register_buffer("beta", torch.tensor([t * self.V / sigma2_init for t in T], dtype=torch.float32))
        self.lr = float(lr)
        self.max_updates = int(max_updates)
        self.eval_every = int(eval_every)
        self.tolerance = float(tolerance)
        self.patience_evals = max(1, int(round(patience_fraction * max_updates / eval_every)))
        self.run_name = run_name
        self.fingerprint = ""  # set by training.train: what a checkpoint must match to be resumed
        # Optional annealing (default off): when every member has converged, multiply the learning rate by
        # lr_drop_factor and restart the convergence window, lr_drops times; then stop. Removes most of
        # Adam's stationary noise from the final state (used by the oracle tests for tight tolerances).
        self.lr_drops = int(lr_drops)
        self.lr_drop_factor = float(lr_drop_factor)
        self.drops_done = 0
        self.window_start = 0  # index into history where the current convergence window starts
        # Persisted in checkpoints (on_save_checkpoint): evaluation history and convergence state.
        self.history: list[dict[str, Any]] = []  # step, val_loss (E), val_D (E), val_R (E), m2 (E, L)
        self.converged_at: list[int | None] = [None] * E
        self.resumed_from_step = 0
        self._reset_running()

    # ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        # Fused Adam (one kernel for all parameters) where the device supports it: same update rule, less
        # per-step overhead. Elementwise, so ensemble members stay independent.
        try:
            return torch.optim.Adam(self.parameters(), lr=self.lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # pragma: no cover - device without fused Adam
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    def _reset_running(self) -> None:
        self._train_sum = None
        self._train_count = 0

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "place"):
            dm.place(self.device)

    def on_train_start(self) -> None:
        if self.all_converged:
            self.trainer.should_stop = True  # a finished run restarted from its last checkpoint

    @property
    def all_converged(self) -> bool:
        return all(c is not None for c in self.converged_at)

    def terms(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        D, R, lognorm = negative_elbo_terms(self.vae, x, noise)
        loss = D + self.beta * R
        if self.vae.config.learned_variance:
            loss = loss + lognorm
        return loss, D, R

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss_e, _, _ = self.terms(batch)
        loss = loss_e.sum()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"run {self.run_name}: non-finite training loss ({loss.item()}) at step {self.trainer.global_step}"
            )
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        detached = loss_e.detach()
        self._train_sum = detached if self._train_sum is None else self._train_sum + detached
        self._train_count += 1
        return loss

    # ----------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = {"n": 0, "loss": 0.0, "D": 0.0, "R": 0.0, "mu2": 0.0, "s2": 0.0}

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        gen = torch.Generator(device=batch.device).manual_seed(987654 + batch_idx)
        E, L = self.vae.ensemble, self.vae.config.latents
        noise = torch.randn((E, batch.shape[0], L), generator=gen, device=batch.device)
        mu, logvar = self.vae.encode(batch)
        loss, D, R = self.terms(batch, noise)
        n = batch.shape[0]
        acc = self._val
        acc["n"] += n
        acc["loss"] = acc["loss"] + loss * n
        acc["D"] = acc["D"] + D * n
        acc["R"] = acc["R"] + R * n
        acc["mu2"] = acc["mu2"] + mu.pow(2).sum(1)
        acc["s2"] = acc["s2"] + logvar.exp().sum(1)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        acc, n = self._val, self._val["n"]
        val_loss = (acc["loss"] / n).detach().cpu().numpy().astype(float)
        mu2, s2 = acc["mu2"] / n, acc["s2"] / n
        m2 = (mu2 / (mu2 + s2)).detach().cpu().numpy().astype(float)
        step = int(self.trainer.global_step)
        train_loss = (
            (self._train_sum / self._train_count).cpu().numpy().astype(float)
            if self._train_count
            else np.full(len(val_loss), np.nan)
        )
        self._reset_running()
        entry = {
            "step": step,
            "val_loss": val_loss.tolist(),
            "val_D": (acc["D"] / n).detach().cpu().numpy().astype(float).tolist(),
            "val_R": (acc["R"] / n).detach().cpu().numpy().astype(float).tolist(),
            "train_loss": train_loss.tolist(),
            "m2": m2.tolist(),
        }
        if not np.all(np.isfinite(val_loss)):
            raise NonFiniteLossError(f"run {self.run_name}: non-finite validation loss at step {step}")
        self.history.append(entry)
        self._check_convergence(step)
        if self.all_converged and self.drops_done < self.lr_drops:
            for opt in self.trainer.optimizers:
                for group in opt.param_groups:
                    group["lr"] *= self.lr_drop_factor
            self.drops_done += 1
            self.window_start = len(self.history)
            self.converged_at = [None] * self.vae.ensemble
        if self.all_converged:
            self.trainer.should_stop = True
        # Logging (CSV): scalars for a single run, one column per member for an ensemble.
        E = self.vae.ensemble
        for key in ("val_loss", "val_D", "val_R", "train_loss"):
            for e in range(E):
                name = key if E == 1 else f"{key}/e{e}"
                self.log(name, float(entry[key][e]), on_step=False, on_epoch=True, prog_bar=(key == "val_loss"))
        if self.vae.config.learned_variance:
            for e, s in enumerate(self.vae.sigma2.detach().cpu().tolist()):
                self.log("sigma2" if E == 1 else f"sigma2/e{e}", float(s), on_step=False, on_epoch=True)

    def _check_convergence(self, step: int) -> None:
        P = self.patience_evals
        if len(self.history) - self.window_start <= P:
            return
        losses = np.array([h["val_loss"] for h in self.history[self.window_start :]])  # (n_eval, E)
        best_now = losses.min(0)
        best_before = losses[:-P].min(0)
        rel = (best_before - best_now) / np.abs(best_before)
        for e, r in enumerate(rel):
            if self.converged_at[e] is None and r < self.tolerance:
                self.converged_at[e] = step

    def m2_drift(self) -> np.ndarray:
        """|d M^2 / d log(updates)| per member and latent over the last patience window, (E, L)."""
        if len(self.history) < 2:
            return np.full((self.vae.ensemble, self.vae.config.latents), np.nan)
        last = self.history[-1]
        first = self.history[max(0, len(self.history) - 1 - self.patience_evals)]
        dlog = math.log(max(last["step"], 1)) - math.log(max(first["step"], 1))
        if dlog <= 0:
            return np.full((self.vae.ensemble, self.vae.config.latents), np.nan)
        return np.abs(np.array(last["m2"]) - np.array(first["m2"])) / dlog

    # ----------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["beta_vae_state"] = {
            "history": self.history,
            "converged_at": self.converged_at,
            "drops_done": self.drops_done,
            "fingerprint": self.fingerprint,
            "window_start": self.window_start,
            # The reparametrisation noise comes from the global generator: restoring it makes a resumed run
            # draw exactly the noise an uninterrupted run would (batches are re-derived from (seed, epoch)).
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("beta_vae_state", {})
        self.resumed_from_step = int(checkpoint.get("global_step", 0))
        self.history = list(state.get("history", []))
        self.converged_at = list(state.get("converged_at", [None] * self.vae.ensemble))
        self.drops_done = int(state.get("drops_done", 0))
        self.window_start = int(state.get("window_start", 0))
        if state.get("torch_rng") is not None:
            torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
