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

from . import elbo_grad
from .vae import VAE, VAEConfig, negative_elbo_terms

VAL_BLOCK = 8192  # rows x members per validation forward pass (a 65536-row chunk's activations overflow the caches)
VAL_MIN_BLOCK = 256  # rows per validation forward pass at least (smaller blocks pay more per-op overhead)
VAL_NOISE_CACHE_BYTES = 512 * 2**20  # keep the fixed validation noise between evaluations up to this size


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite; names the run and the step."""


class FusedAdam(torch.optim.Adam):
    """Adam (``torch.optim.Adam(fused=True)``'s kernel and update rule) over ONE flat parameter buffer.

    For small models the optimizer's per-tensor Python and kernel-launch overhead, not its arithmetic, is most
    of its cost (issue 6). At construction the given parameters are re-pointed (``p.data``) to views of one
    contiguous buffer, which is the optimizer's only parameter, and a flat gradient buffer of the same layout
    is allocated. Two ways to supply the gradient:

    - ``step()`` after ``loss.backward()``: the parameters' ``.grad`` are gathered into the buffer (one ``cat``);
    - ``step_flat()`` after writing the gradient of every parameter into ``grad_view(p)`` (the hand-written
      backward pass of ``elbo_grad``; no gathering, no ``.grad`` tensors).

    Either way every parameter is updated with one fused Adam call. Adam is elementwise, so this is the same
    update (lr, betas, eps, bias correction; no weight decay) as separate tensors; members of an ensemble stay
    independent. Changing ``param_groups[0]["lr"]`` works as usual; the state (``step``, ``exp_avg``,
    ``exp_avg_sq``) is Adam's, for the flat buffer. Create it after the model is on its device (Lightning's
    ``configure_optimizers`` is).
    """

    def __init__(self, params, lr: float) -> None:
        views = [p for p in params if p.requires_grad]
        if not views:
            raise ValueError("FusedAdam: no trainable parameters")
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in views])
        grad = torch.zeros_like(flat)
        self._grad_views: dict[int, torch.Tensor] = {}
        offset = 0
        for p in views:
            n = p.numel()
            p.data = flat[offset : offset + n].view_as(p)
            self._grad_views[id(p)] = grad[offset : offset + n].view_as(p)
            offset += n
        flat = torch.nn.Parameter(flat)
        super().__init__([flat], lr=lr, fused=True)
        self.flat, self.views, self.flat_grad = flat, views, grad

    def grad_view(self, p: torch.nn.Parameter) -> torch.Tensor:
        """The slice of the flat gradient buffer that holds ``p``'s gradient (shape of ``p``)."""
        return self._grad_views[id(p)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the model parameters' gradients (not only the flat buffer's)."""
        for p in self.views:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.zero_()
        self.flat.grad = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for p in self.views]
        if any(g is None for g in grads):
            missing = sum(g is None for g in grads)
            raise RuntimeError(f"FusedAdam: {missing} parameter(s) without a gradient at this step")
        torch.cat([g.reshape(-1) for g in grads], out=self.flat_grad)
        self._update()
        return loss

    @torch.no_grad()
    def step_flat(self) -> None:
        """One update with the gradient already written into the ``grad_view``s."""
        self._update()

    def _update(self) -> None:
        self.flat.grad = self.flat_grad
        group = self.param_groups[0]
        state = self.state[self.flat]
        if not state or torch.is_tensor(group["lr"]) or group["amsgrad"] or group["weight_decay"] or group["maximize"]:
            super().step()  # first step: creates the state exactly as Adam(fused=True) does
            return
        beta1, beta2 = group["betas"]
        state["step"].add_(1)
        torch._fused_adam_(
            [self.flat], [self.flat_grad], [state["exp_avg"]], [state["exp_avg_sq"]], [], [state["step"]],
            amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"],
            maximize=False, grad_scale=None, found_inf=None,
        )


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
        self._val_noise: dict[int, torch.Tensor] = {}  # validation_noise's cache (not checkpointed)

    # ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        # Adam over one flat parameter buffer (FusedAdam above): same update rule, one fused kernel call.
        try:
            return FusedAdam(self.parameters(), lr=self.lr)
        except (RuntimeError, TypeError, ValueError):  # pragma: no cover - device without fused Adam
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    def _reset_running(self) -> None:
        self._train_sum = None
        self._train_count = 0

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "place"):
            dm.place(self.device)

    def on_fit_end(self) -> None:
        self._val_noise.clear()  # up to VAL_NOISE_CACHE_BYTES, not needed once training is over

    def on_train_start(self) -> None:
        if self.all_converged:
            self.trainer.should_stop = True  # a finished run restarted from its last checkpoint

    @property
    def all_converged(self) -> bool:
        return all(c is not None for c in self.converged_at)

    def terms(self, x: torch.Tensor, noise: torch.Tensor | None = None, encoded=None):
        D, R, lognorm = negative_elbo_terms(self.vae, x, noise, encoded=encoded)
        return elbo_grad.beta_vae_loss(D, R, lognorm, self.beta, self.vae.config.learned_variance), D, R

    def training_step(self, chunk: torch.Tensor, batch_idx: int) -> None:
        """Several updates per call (manual optimization): ``chunk`` is (K, batch, d), K consecutive batches
        of the epoch's permutation (datamodule.IndexedBatches), so Lightning's per-batch machinery runs once
        per K updates. Each update: loss of every member, gradient of their sum (written by hand into the
        optimizer's flat buffer, elbo_grad), one Adam step."""
        if chunk.dim() == 2:
            chunk = chunk.unsqueeze(0)
        lopt = self.optimizers()
        opt = lopt.optimizer
        start = int(self.trainer.global_step)
        n = chunk.shape[0]
        max_steps = self.trainer.max_steps
        if max_steps is not None and max_steps >= 0:
            n = min(n, max_steps - start)
        learned = self.vae.config.learned_variance
        if isinstance(opt, FusedAdam):
            grad_of, step = opt.grad_view, opt.step_flat
        else:  # pragma: no cover - a device without fused Adam: plain Adam on per-parameter .grad tensors
            for p in self.parameters():
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
            grad_of, step = (lambda p: p.grad), opt.step
        losses = chunk.new_empty((n, self.vae.ensemble))
        for k in range(n):
            fwd = elbo_grad.forward(self.vae, chunk[k], keep=True)
            elbo_grad.backward(self.vae, fwd, self.beta, grad_of)
            lopt._on_before_step()  # Lightning's step counter (trainer.global_step), as LightningOptimizer.step does
            step()
            lopt._on_after_step()
            losses[k] = fwd.loss(self.beta, learned)
        # One finiteness check per chunk (no per-step host sync); the first bad update is named.
        finite = torch.isfinite(losses).all(dim=1)
        if not bool(finite.all()):
            k = int(torch.nonzero(~finite)[0, 0])
            raise NonFiniteLossError(
                f"run {self.run_name}: non-finite training loss ({losses[k].sum().item()}) at step {start + k}"
            )
        total = losses.sum(0)
        self._train_sum = total if self._train_sum is None else self._train_sum + total
        self._train_count += n

    # ----------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = {"n": 0, "loss": 0.0, "D": 0.0, "R": 0.0, "mu2": 0.0, "s2": 0.0}

    def validation_noise(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The fixed evaluation noise of validation chunk ``batch_idx``: (E, rows, L) normal draws from a generator
        seeded with ``987654 + batch_idx``, the same at every evaluation (so successive validation losses are
        comparable). Drawn once and kept (up to ``VAL_NOISE_CACHE_BYTES`` in all), else drawn again each time."""
        E, L = self.vae.ensemble, self.vae.config.latents
        shape = (E, batch.shape[0], L)
        cached = self._val_noise.get(batch_idx)
        if cached is not None and tuple(cached.shape) == shape and cached.device == batch.device:
            return cached
        # other shape or device (new data, moved model): drawn again, and nothing kept for another device
        self._val_noise = {k: v for k, v in self._val_noise.items() if k != batch_idx and v.device == batch.device}
        gen = torch.Generator(device=batch.device).manual_seed(987654 + batch_idx)
        noise = torch.randn(shape, generator=gen, device=batch.device)
        held = sum(t.numel() * t.element_size() for t in self._val_noise.values())
        if held + noise.numel() * noise.element_size() <= VAL_NOISE_CACHE_BYTES:
            self._val_noise[batch_idx] = noise
        return noise

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        noise = self.validation_noise(batch, batch_idx)
        acc = self._val
        # The chunk's noise is drawn at once (so it does not depend on the block size); the forward pass runs
        # in cache-sized blocks (elbo_grad.forward: the loss expressions, no graph, activations overwritten).
        block = max(VAL_MIN_BLOCK, VAL_BLOCK // self.vae.ensemble)  # activations (E, block, width) of about one size
        for start in range(0, batch.shape[0], block):
            xb = batch[start : start + block]
            fwd = elbo_grad.forward(self.vae, xb, noise[:, start : start + block])
            n = xb.shape[0]
            acc["n"] += n
            acc["loss"] = acc["loss"] + fwd.loss(self.beta, self.vae.config.learned_variance) * n
            acc["D"] = acc["D"] + fwd.D * n
            acc["R"] = acc["R"] + fwd.R * n
            acc["mu2"] = acc["mu2"] + fwd.mu.pow(2).sum(1)
            acc["s2"] = acc["s2"] + fwd.var.sum(1)

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
