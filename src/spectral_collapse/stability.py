"""The equilibrium check from the collapsed side (issue 17, item 3): the paper's own stability argument.

A settled M^2 does not prove equilibrium: a collapsed latent can sit at a saddle (weights zero, variance at the
prior) where nothing moves for a long time although reactivating it would lower the loss. A converged point is
at equilibrium only if a perturbation of its collapsed latents relaxes back. The probe, per member:

1. collapsed latents: M_k^2 <= active threshold on the validation split (the split the convergence rule uses);
2. a copy of the model whose collapsed latents get small random encoder AND decoder weights (normal, std
   ``scale``; seeded): linear family, column k of the encoder and row k of the decoder; mlp, the mu output k of
   the encoder's last layer and the decoder's first-layer weights from latent k;
3. a short continuation of that copy, ``updates`` updates at the member's final learning rate, with the training
   machinery of a job (``lightning_module.BetaVAESystem``: the ensemble model, the fused step; the datamodule's
   seeded batches), every member at once; a fresh Adam state (the checkpoint's moments are not an input of the
   measurement);
4. passed: no collapsed latent became active (M^2 > threshold) and the validation loss (the fixed noise of
   ``measure.measure_split``) did not improve by more than the convergence tolerance (relative) over a control:
   the same continuation (same seed, batches and noise) of the unperturbed model. Without the control, points
   that are converged by the project's rule failed (measured on WorldClim, linear, 1,000 updates at lr 1e-4:
   1.2e-4 to 3.9e-4 improvement, tolerance 1e-4, no collapsed latent moving): the rule bounds the improvement
   over one patience window, not over any longer continuation. Recorded beside
   it: how many collapsed latents ended with a larger M^2 than right after the perturbation (``grown``), the
   direct sign of an unstable direction when the continuation is too short for either criterion (a small final
   learning rate), but exposed to minibatch noise where the restoring force is weak (T just above T_k).

The probe never changes the measured model: it works on a copy, and the original weights stay what is measured.
Deterministic: the perturbation, the batches and the reparametrisation noise are drawn from ``seed``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from .datamodule import ArrayDataModule
from .elbo_grad import beta_vae_loss
from .measure import measure_split
from .vae import VAE, latent_parameters


EPOCH_UPDATES = 1000  # updates per datamodule epoch of the continuation (memory of one gathered epoch)


@dataclass(frozen=True)
class StabilitySettings:
    """``analysis.stability_check`` of the config. No field has a default here: ``from_config`` takes what a
    block lacks from workflow/schemas/config.schema.yaml, the one place defaults live."""

    enabled: bool
    updates: int
    scale: float
    seed: int

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> "StabilitySettings":
        from .config import schema_defaults

        block = dict(block or {})
        unknown = set(block) - {"enabled", "updates", "scale", "seed"}
        if unknown:
            raise ValueError(f"analysis.stability_check: unknown keys {sorted(unknown)} "
                             "(expected enabled, updates, scale, seed)")
        out = {**schema_defaults("analysis", "stability_check"), **block}
        if int(out["updates"]) < 1 or not float(out["scale"]) > 0:
            raise ValueError(f"analysis.stability_check needs updates >= 1 and scale > 0, got {block}: fix the config")
        return cls(bool(out["enabled"]), int(out["updates"]), float(out["scale"]), int(out["seed"]))


def collapsed_weights(model: VAE) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoder, decoder) weight views of the latents: encoder (E, in, L), one column per latent's mean;
    decoder (E, L, out), one row per latent (``vae.latent_parameters``: the mean's weights, the decoder's)."""
    encoder, decoder = latent_parameters(model)
    (enc, axis, offset), (dec, _, _) = encoder[0], decoder[0]
    return enc.narrow(axis, offset, model.config.latents), dec


@torch.no_grad()
def perturb_collapsed(model: VAE, collapsed: np.ndarray, scale: float, seed: int) -> VAE:
    """A copy of ``model`` whose collapsed latents (``collapsed``: (E, L) bool) have random encoder and decoder
    weights of std ``scale`` (drawn on the CPU from ``seed``, so every device gets the same)."""
    out = copy.deepcopy(model)
    enc, dec = collapsed_weights(out)
    mask = torch.as_tensor(np.asarray(collapsed, dtype=bool), device=enc.device)
    gen = torch.Generator().manual_seed(int(seed))
    for weight, where in ((enc, mask[:, None, :]), (dec, mask[:, :, None])):
        draw = (scale * torch.randn(weight.shape, generator=gen, dtype=torch.float64)).to(weight)
        weight.copy_(torch.where(where, draw, weight))
    return out


def continue_training(model: VAE, data: ArrayDataModule, T_grid: Sequence[float], lrs: Sequence[float], *,
                      updates: int, batch_size: int, seed: int, accelerator: str = "auto") -> VAE:
    """``updates`` more updates of every member of ``model`` (in place) at its learning rate ``lrs[e]``, with a
    training job's system and step (no validation, no checkpoint, no log: a probe)."""
    from lightning_fabric.plugins.environments import LightningEnvironment

    from .lightning_module import BetaVAESystem

    # An "epoch" of at most EPOCH_UPDATES updates: its batches are gathered as one (updates, batch, d) tensor.
    data.batch_size, data.eval_every, data.seed = int(batch_size), min(int(updates), EPOCH_UPDATES), int(seed)
    pl.seed_everything(int(seed), workers=True, verbose=False)
    system = BetaVAESystem(model.train(), list(T_grid), data.V, lr=float(lrs[0]), run_name="stability check")
    system.set_members([True] * model.ensemble, lrs)
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, max_steps=int(updates), max_epochs=-1, deterministic=True,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, plugins=[LightningEnvironment()],
    )
    trainer.fit(system, datamodule=data)
    return system.vae.eval()


def validation_loss(model: VAE, measured: Mapping[str, np.ndarray], beta: np.ndarray) -> np.ndarray:
    """loss_e = D_e + beta_e R_e (+ (d/2) log sigma_dec^2 when learned), from ``measure_split``'s D and R."""
    lognorm = 0.5 * model.config.n_features * model.log_sigma2.detach().double().cpu().numpy()
    return beta_vae_loss(measured["D"], measured["R"], lognorm, beta, model.config.learned_variance)


def stability_check(
    model: VAE,
    data: ArrayDataModule,
    x_val: np.ndarray,
    w_val: np.ndarray | None,
    *,
    T_grid: Sequence[float],
    beta: Sequence[float],
    lrs: Sequence[float],
    batch_size: int,
    tolerance: float,
    active_threshold: float,
    settings: StabilitySettings,
    seed: int,
) -> list[dict[str, Any]]:
    """Probe every member of ``model`` (left unchanged); one record per member: passed, reactivated (count),
    reactivated_latents, n_collapsed, loss_before (the model's), loss_after (the probe's), loss_control (the
    unperturbed continuation's), loss_change (the probe's relative improvement over the control, > 0 better),
    loss_change_control (the control's over the model: what training on alone gains), updates, lr, scale; and, not part of ``passed``, grown (collapsed latents whose M^2 ended above its value
    right after the perturbation: it did not relax back), m2_perturbed_max, m2_after_max (over the collapsed
    latents; None without any)."""
    V, beta_arr = float(data.V), np.asarray(beta, dtype=float)
    before = measure_split(model, x_val, V, active_threshold, w_val, curves=False)
    collapsed = before["M2"] <= active_threshold
    probe = perturb_collapsed(model, collapsed, settings.scale, seed)
    start = measure_split(probe, x_val, V, active_threshold, w_val, curves=False)["M2"]  # right after perturbing
    device = model.log_sigma2.device
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    # The control: the same continuation (same seed: same batches and noise) of the unperturbed model. A
    # converged point still improves a little when trained on (its tolerance bounds the improvement over one
    # patience window only); what the perturbation gains is the difference.
    control = continue_training(copy.deepcopy(model), data, T_grid, lrs, updates=settings.updates,
                                batch_size=batch_size, seed=seed, accelerator=accelerator)
    probe = continue_training(probe, data, T_grid, lrs, updates=settings.updates, batch_size=batch_size, seed=seed,
                              accelerator=accelerator)
    after = measure_split(probe.to(device), x_val, V, active_threshold, w_val, curves=False)
    controlled = measure_split(control.to(device), x_val, V, active_threshold, w_val, curves=False)
    loss_before, loss_after = validation_loss(model, before, beta_arr), validation_loss(probe, after, beta_arr)
    loss_control = validation_loss(control, controlled, beta_arr)
    out = []
    for e in range(model.ensemble):
        reactivated = np.flatnonzero(collapsed[e] & (after["M2"][e] > active_threshold))
        grown = collapsed[e] & (after["M2"][e] > start[e])  # the perturbation did not relax back (detail only)
        change = float((loss_control[e] - loss_after[e]) / abs(loss_control[e]))
        out.append({
            "passed": bool(len(reactivated) == 0 and change <= tolerance),
            "reactivated": int(len(reactivated)),
            "reactivated_latents": reactivated.tolist(),
            "n_collapsed": int(collapsed[e].sum()),
            "grown": int(grown.sum()),
            "m2_perturbed_max": float(start[e][collapsed[e]].max()) if collapsed[e].any() else None,
            "m2_after_max": float(after["M2"][e][collapsed[e]].max()) if collapsed[e].any() else None,
            "loss_before": float(loss_before[e]),
            "loss_after": float(loss_after[e]),
            "loss_control": float(loss_control[e]),
            "loss_change": change,
            "loss_change_control": float((loss_before[e] - loss_control[e]) / abs(loss_before[e])),
            "tolerance": float(tolerance),
            "updates": settings.updates,
            "lr": float(lrs[e]),
            "scale": settings.scale,
            "seed": int(seed),
        })
    return out


def member_lrs(record: Mapping[str, Any]) -> list[float]:
    """Each member's final learning rate: the base rate times lr_drop_factor once per annealing step done."""
    from .settings import TrainingSettings

    st = TrainingSettings.from_mapping(record["training"])
    return [st.lr * st.lr_drop_factor ** int(m.get("lr_drops_done", 0)) for m in record["members"]]


def probe_seed(settings: StabilitySettings, run_seed: int) -> int:
    """The probe's seed: the configured seed and the run's seed, mixed (another seed, other draws)."""
    return int(np.random.SeedSequence([settings.seed, int(run_seed)]).generate_state(1)[0])
