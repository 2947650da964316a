"""The LightningModule that trains an ensemble beta-VAE at fixed temperatures and owns its loss.

loss_e = D_e + beta_e R_e  (+ (d/2) log sigma_dec^2 when the decoder variance is learned), per ensemble
member e (docs/science.md section 2); the optimised objective is the SUM over members, so every member's
gradient is its own. beta = T V / sigma_dec^2, with sigma_dec^2 the decoder's initial variance (with a learned
variance the run's temperature is then T_eff = beta sigma_dec^2(learned) / V; see ``training``).

The system only trains and evaluates. It is built around a VAE made outside (``vae``); when to stop, anneal or
freeze a member is decided by ``callbacks.Convergence``, which tells the system through ``set_members`` which
members still train and at which learning rate. A frozen member (converged) costs nothing: the training step
and the validation pass run only over the members still training, in contiguous runs of member rows.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from . import elbo_grad, oracle
from .fixed_noise import FixedNoise
from .fused_adam import FusedAdam
from .vae import VAE

VAL_BLOCK = 8192  # rows x members per validation forward pass (a 65536-row batch's activations overflow the caches)
VAL_BLOCK_GPU = 2**19  # the same on a GPU: no cache to fit, the cost is per kernel launch (128 MB per activation)
VAL_MIN_BLOCK = 256  # rows per validation forward pass at least (smaller blocks pay more per-op overhead)


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite; names the run and the step."""


class BetaVAESystem(pl.LightningModule):
    def __init__(self, vae: VAE, T: Sequence[float], V: float, *, lr: float, run_name: str = "run") -> None:
        super().__init__()
        E = vae.ensemble
        T = [float(t) for t in T]
        if len(T) != E:
            raise ValueError(f"{len(T)} temperatures for an ensemble of {E}")
        # Manual optimisation: one optimizer step = one update = one global_step, several per training_step.
        self.automatic_optimization = False
        self.vae, self.T, self.V, self.lr, self.run_name = vae, T, float(V), float(lr), run_name
        self.register_buffer("beta", torch.tensor([float(oracle.beta_of_T(t, self.V, vae.config.sigma2)) for t in T]))
        self.member_lr = [self.lr] * E  # set by callbacks.Convergence (annealing)
        self.training_members = [True] * E  # False: frozen (converged)
        self._rows: list[tuple[int, int, VAE, Any]] | None = None  # contiguous runs of training members
        self._opt: FusedAdam | None = None
        self.last_eval: dict[str, Any] | None = None  # the latest validation pass, for the callbacks
        self.resumed_from_step = 0
        self._train_sum, self._train_count = None, 0
        self.val_noise = FixedNoise()

    # ---------------------------------------------------------------------------------------------- training
    def training_step(self, batches: torch.Tensor, batch_idx: int) -> None:
        """Several updates per call: ``batches`` is (K, batch, d), K consecutive batches of the epoch
        (datamodule.IndexedBatches). Each update: the loss of every training member, its gradient written by
        hand into the optimizer's flat buffer (elbo_grad), one fused Adam step over the training members."""
        if batches.dim() == 2:
            batches = batches.unsqueeze(0)
        lopt = self.optimizers()
        opt: FusedAdam = lopt.optimizer
        start = int(self.trainer.global_step)
        n = batches.shape[0]
        if self.trainer.max_steps is not None and self.trainer.max_steps >= 0:
            n = min(n, self.trainer.max_steps - start)
        rows, ranges = self._training_rows(), self._lr_ranges()
        learned = self.vae.config.learned_variance
        losses = batches.new_zeros((n, self.vae.ensemble))
        for k in range(n):
            for a, b, view, grad_of in rows:
                fwd = elbo_grad.forward(view, batches[k], keep=True)
                elbo_grad.backward(view, fwd, self.beta[a:b], grad_of)
                losses[k, a:b] = fwd.loss(self.beta[a:b], learned)
            lopt._on_before_step()  # Lightning's step counter (trainer.global_step), as LightningOptimizer.step does
            opt.step_members(ranges)
            lopt._on_after_step()
        finite = torch.isfinite(losses).all(dim=1)  # one check per call: no host sync per update
        if not bool(finite.all()):
            k = int(torch.nonzero(~finite)[0, 0])
            raise NonFiniteLossError(
                f"run {self.run_name}: non-finite training loss ({losses[k].sum().item()}) at step {start + k}")
        total = losses.sum(0)
        self._train_sum = total if self._train_sum is None else self._train_sum + total
        self._train_count += n

    # -------------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val = {"w": 0.0, "loss": 0.0, "D": 0.0, "R": 0.0, "mu2": 0.0, "s2": 0.0}

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor | None], batch_idx: int) -> None:
        """Loss terms of the training members on one validation batch with its fixed noise, as (weighted)
        sums; the forward pass runs in cache-sized blocks (no graph, activations overwritten)."""
        x, w = batch
        noise, acc = self.validation_noise(x, batch_idx), self._val
        block = max(VAL_MIN_BLOCK, (VAL_BLOCK if x.device.type == "cpu" else VAL_BLOCK_GPU) // self.vae.ensemble)
        E, L = self.vae.ensemble, self.vae.config.latents
        sums = {key: x.new_zeros(E) for key in ("loss", "D", "R")} | {k: x.new_zeros(E, L) for k in ("mu2", "s2")}
        for a, b, view, _ in self._training_rows():
            for s in range(0, x.shape[0], block):
                xb, wb = x[s : s + block], (None if w is None else w[s : s + block])
                fwd = elbo_grad.forward(view, xb, noise[a:b, s : s + block], weights=wb)
                mass = xb.shape[0] if wb is None else wb.sum()
                sums["loss"][a:b] += fwd.loss(self.beta[a:b], self.vae.config.learned_variance) * mass
                sums["D"][a:b] += fwd.D * mass
                sums["R"][a:b] += fwd.R * mass
                wcol = 1.0 if wb is None else wb[:, None]
                sums["mu2"][a:b] += (fwd.mu.pow(2) * wcol).sum(1)
                sums["s2"][a:b] += (fwd.var * wcol).sum(1)
        acc["w"] = acc["w"] + (x.shape[0] if w is None else w.sum())
        for key, value in sums.items():
            acc[key] = acc[key] + value

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        acc = self._val
        mu2, s2 = acc["mu2"] / acc["w"], acc["s2"] / acc["w"]
        host = {k: (acc[k] / acc["w"]).detach().cpu().numpy().astype(float) for k in ("loss", "D", "R")}
        host["m2"] = (mu2 / (mu2 + s2)).detach().cpu().numpy().astype(float)
        off = ~np.asarray(self.training_members)
        train_loss = (self._train_sum / self._train_count).cpu().numpy().astype(float) if self._train_count \
            else np.full(self.vae.ensemble, np.nan)
        self._train_sum, self._train_count = None, 0
        entry = {"step": int(self.trainer.global_step), "val_loss": host["loss"], "val_D": host["D"],
                 "val_R": host["R"], "train_loss": train_loss, "m2": host["m2"]}
        for key, value in entry.items():  # frozen members are not evaluated: None
            if key != "step":
                entry[key] = [None if off[e] else v for e, v in enumerate(value.tolist())]
        if not all(np.isfinite(v) for v in entry["val_loss"] if v is not None):
            raise NonFiniteLossError(f"run {self.run_name}: non-finite validation loss at step {entry['step']}")
        self.last_eval = entry
        one = self.vae.ensemble == 1
        for key in ("val_loss", "val_D", "val_R", "train_loss"):
            for e, value in enumerate(entry[key]):
                if value is not None:
                    self.log(key if one else f"{key}/e{e}", float(value), on_epoch=True, prog_bar=key == "val_loss")
        if self.vae.config.learned_variance:
            for e, s in enumerate(self.vae.sigma2.detach().cpu().tolist()):
                self.log("sigma2" if one else f"sigma2/e{e}", float(s), on_epoch=True)

    def validation_noise(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The fixed evaluation noise (E, rows, L) of validation batch ``batch_idx`` (``fixed_noise``)."""
        return self.val_noise.get((self.vae.ensemble, batch.shape[0], self.vae.config.latents), batch_idx, batch.device)

    # --------------------------------------------------------------------------------------- optimizer, hooks
    def configure_optimizers(self) -> FusedAdam:
        self._opt, self._rows = FusedAdam(self.parameters(), lr=self.lr), None  # it re-points the parameters
        return self._opt

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "place"):
            dm.place(self.device)

    def on_fit_end(self) -> None:
        self.val_noise.clear()  # up to fixed_noise.CACHE_BYTES, not needed once training is over

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.resumed_from_step = int(checkpoint.get("global_step", 0))

    # --------------------------------------------------------------------------------------------- members
    def set_members(self, training: Sequence[bool], lr: Sequence[float]) -> None:
        """Which members still train, and each member's learning rate (callbacks.Convergence)."""
        self.training_members, self.member_lr = [bool(t) for t in training], [float(v) for v in lr]
        self._rows = None

    def _training_rows(self) -> list[tuple[int, int, VAE, Any]]:
        """(a, b, VAE of member rows [a, b), its gradient slots) for each maximal run of training members; the
        whole ensemble itself while every member trains (the path of a group that has not frozen anyone).
        Gradient slots only once the optimizer exists (not in a validation-only run)."""
        if self._rows is None:
            E, opt = self.vae.ensemble, self._opt
            if all(self.training_members):
                self._rows = [(0, E, self.vae, opt.grad_view if opt else None)]
            else:
                self._rows = []
                for a, b in _runs(self.training_members, [True] * E):
                    view = self.vae.rows(a, b)
                    slots = {} if opt is None else {
                        id(v): opt.grad_view(p)[a:b] for v, p in zip(view.parameters(), self.vae.parameters())}
                    self._rows.append((a, b, view, lambda p, slots=slots: slots[id(p)]))
        return self._rows

    def _lr_ranges(self) -> list[tuple[int, int, float]] | None:
        """Member ranges to update, each at one learning rate; None: every member at the base rate."""
        if all(self.training_members) and all(v == self.lr for v in self.member_lr):
            return None
        return [(a, b, self.member_lr[a]) for a, b in _runs(self.training_members, self.member_lr)]


def _runs(training: Sequence[bool], key: Sequence[Any]) -> list[tuple[int, int]]:
    """Maximal runs [a, b) of consecutive training members with equal ``key``."""
    out: list[tuple[int, int]] = []
    for e, on in enumerate(training):
        if on and out and out[-1][1] == e and key[out[-1][0]] == key[e]:
            out[-1] = (out[-1][0], e + 1)
        elif on:
            out.append((e, e + 1))
    return out
