"""The negative ELBO of an ensemble VAE and its gradient, computed by hand (no autograd graph).

Why: a training update of these small models (19 inputs, 64-wide layers) is about half matrix products
and half per-operation overhead, and autograd adds to the latter: one graph node per operation, a
gradient tensor allocated per parameter and then gathered into the optimizer's flat buffer. Here the
backward pass is written out once: every weight and bias gradient is written by ``out=`` straight into
the view the optimizer hands out (``fused_adam.FusedAdam.grad_view``), intermediate gradients are
updated in place, and no graph is built. The forward expressions are those of ``vae.negative_elbo_terms``
(docs/science.md section 2) op for op, so the loss is bit for bit the same; the gradient equals autograd's up to
float rounding (``tests/test_performance.py`` checks both, in float64 to 1e-12).

Objective differentiated: ``J = sum_e loss_e`` with ``loss_e = D_e + beta_e R_e (+ (d/2) log sigma_dec^2_e
when the decoder variance is learned)``; members are independent, so member e's gradient is that of its
own loss.

    fwd = forward(model, x, keep=True)       # noise drawn like negative_elbo_terms (randn_like(mu))
    loss = fwd.loss(beta, learned)           # (E,)
    backward(model, fwd, beta, grad_of)      # grad_of(param) -> tensor the gradient is written into
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.nn.functional import silu

from .vae import VAE, EnsembleLinear, EnsembleMLP, as_members

GradOf = Callable[[torch.nn.Parameter], torch.Tensor]


@dataclass
class Forward:
    """What the forward pass computed, and (``keep=True``) what the backward pass needs."""

    x: torch.Tensor  # (B, d) or (E, B, d)
    mu: torch.Tensor  # (E, B, L)
    logvar: torch.Tensor  # (E, B, L) (a broadcast view for the linear family)
    var: torch.Tensor  # exp(logvar)
    D: torch.Tensor  # (E,)
    R: torch.Tensor  # (E,)
    lognorm: torch.Tensor  # (E,) (d/2) log sigma_dec^2
    noise: torch.Tensor | None = None
    std: torch.Tensor | None = None
    z: torch.Tensor | None = None
    diff: torch.Tensor | None = None  # x_hat - x
    saved: dict = field(default_factory=dict)  # per-network layer inputs and pre-activations

    def loss(self, beta: torch.Tensor, learned_variance: bool) -> torch.Tensor:
        return beta_vae_loss(self.D, self.R, self.lognorm, beta, learned_variance)


def beta_vae_loss(D: torch.Tensor, R: torch.Tensor, lognorm: torch.Tensor, beta: torch.Tensor,
                  learned_variance: bool) -> torch.Tensor:
    """loss_e = D_e + beta_e R_e, plus (d/2) log sigma_dec^2_e when sigma_dec^2 is learned (docs/science.md section 2)."""
    loss = D + beta * R
    return loss + lognorm if learned_variance else loss


def _mlp_forward(mlp: EnsembleMLP, h: torch.Tensor, keep: bool) -> tuple[torch.Tensor, tuple]:
    """Output of the MLP and, with ``keep``, what its backward pass needs: every layer's input and every
    hidden pre-activation. Without ``keep`` this is ``EnsembleMLP.forward`` (no graph: SiLU in place)."""
    if not keep:
        return mlp.forward(h), ()
    h = as_members(h, mlp.out.weight.shape[0])
    inputs, pres = [], []
    for layer in mlp.hidden:
        pre = torch.baddbmm(layer.bias, h, layer.weight)
        inputs.append(h)
        pres.append(pre)
        h = silu(pre)
    inputs.append(h)
    return torch.baddbmm(mlp.out.bias, h, mlp.out.weight), (inputs, pres)


def _linear_backward(layer: EnsembleLinear, h: torch.Tensor, g: torch.Tensor, grad_of: GradOf,
                     need_input_grad: bool) -> torch.Tensor | None:
    """Writes d/dweight and d/dbias of y = h W + b given g = dJ/dy; returns dJ/dh if asked."""
    torch.bmm(as_members(h, g.shape[0]).transpose(1, 2), g, out=grad_of(layer.weight))
    torch.sum(g, dim=1, keepdim=True, out=grad_of(layer.bias))
    return torch.bmm(g, layer.weight.transpose(1, 2)) if need_input_grad else None


def _mlp_backward(mlp: EnsembleMLP, inputs: list, pres: list, g: torch.Tensor, grad_of: GradOf,
                  need_input_grad: bool) -> torch.Tensor | None:
    g = _linear_backward(mlp.out, inputs[-1], g, grad_of, True)
    for i in range(len(mlp.hidden) - 1, -1, -1):
        # d silu: written over the pre-activation, which is not needed afterwards
        g = torch.ops.aten.silu_backward.grad_input(g, pres[i], grad_input=pres[i])
        g = _linear_backward(mlp.hidden[i], inputs[i], g, grad_of, need_input_grad or i > 0)
    return g


def _row_mean(v: torch.Tensor) -> torch.Tensor:
    return v.mean(-1)


def _weighted_row_mean(weights: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    share = weights / weights.sum()
    return lambda v: (v * share).sum(-1)


@torch.no_grad()
def forward(model: VAE, x: torch.Tensor, noise: torch.Tensor | None = None, keep: bool = False,
            weights: torch.Tensor | None = None) -> Forward:
    """D, R (per member, batch means) and the posterior moments of ``x``; ``keep`` saves what ``backward``
    needs. Noise ``None``: drawn by ``torch.randn_like(mu)`` from the global generator, as in
    ``vae.negative_elbo_terms``. ``weights`` (rows,): D and R are weighted means over the rows instead
    (evaluation of a cell-area-weighted split; ``backward`` does not take them)."""
    cfg = model.config
    saved: dict = {}
    if cfg.family == "linear":
        mu = model.enc_mu.forward(x)
        logvar = model.enc_logvar.expand_as(mu)
    else:
        h, saved["enc"] = _mlp_forward(model.enc, x, keep)
        mu, logvar = h[..., : cfg.latents], h[..., cfg.latents :]
    if noise is None:
        noise = torch.randn_like(mu)
    # The expressions of vae.negative_elbo_terms, op for op (same rounding, same loss).
    std = torch.exp(0.5 * logvar)
    z = mu + std * noise
    var = logvar.exp()
    mean = _row_mean if weights is None else _weighted_row_mean(weights)
    R = mean((0.5 * (mu.pow(2) + var - logvar - 1.0)).sum(-1))
    if cfg.family == "linear":
        x_hat = model.dec.forward(z)
    else:
        x_hat, saved["dec"] = _mlp_forward(model.dec, z, keep)
    diff = x_hat - x
    sq = mean(diff.pow(2).sum(-1))
    sigma2 = model.sigma2
    fwd = Forward(x=x, mu=mu, logvar=logvar, var=var, D=sq / (2.0 * sigma2), R=R,
                  lognorm=0.5 * x.shape[-1] * model.log_sigma2)
    if keep:
        fwd.noise, fwd.std, fwd.z, fwd.diff, fwd.saved = noise, std, z, diff, saved
    return fwd


@torch.no_grad()
def backward(model: VAE, fwd: Forward, beta: torch.Tensor, grad_of: GradOf) -> None:
    """Write the gradient of ``sum_e loss_e`` w.r.t. every trainable parameter into ``grad_of(param)``
    (overwritten, not accumulated). ``fwd`` must come from ``forward(..., keep=True)``."""
    cfg = model.config
    if fwd.diff is None:
        raise ValueError("backward needs forward(..., keep=True)")
    E, B = fwd.mu.shape[0], fwd.mu.shape[-2]
    sigma2 = model.sigma2
    # D_e = mean_n sum_j diff^2 / (2 sigma2_e):  dJ/dx_hat = diff / (B sigma2_e)
    g = fwd.diff * (1.0 / (B * sigma2))[:, None, None]
    if cfg.family == "linear":
        g_z = _linear_backward(model.dec, fwd.z, g, grad_of, True)
    else:
        g_z = _mlp_backward(model.dec, *fwd.saved["dec"], g, grad_of, True)
    # z = mu + std noise, R_e = mean_n sum_k (mu^2 + var - logvar - 1) / 2, weight beta_e:
    # dJ/dmu = g_z + (beta_e / B) mu;  dJ/dlogvar = (g_z noise std + (beta_e / B)(var - 1)) / 2
    w = (beta / B)[:, None, None]
    if cfg.family == "linear":
        g_mu = torch.addcmul(g_z, w, fwd.mu)
        g_logvar = (g_z * fwd.noise * fwd.std).sum(1, keepdim=True)
        g_logvar.add_(w * (fwd.var[:, :1] - 1.0) * B).mul_(0.5)  # logvar is the same for every sample
        grad_of(model.enc_logvar).copy_(g_logvar)
        _linear_backward(model.enc_mu, fwd.x, g_mu, grad_of, False)
    else:
        L = cfg.latents
        g_h = torch.empty((E, B, 2 * L), dtype=g_z.dtype, device=g_z.device)
        torch.addcmul(g_z, w, fwd.mu, out=g_h[..., :L])
        g_lv = g_h[..., L:]
        torch.mul(g_z, fwd.noise, out=g_lv)
        g_lv.mul_(fwd.std).add_(w * (fwd.var - 1.0)).mul_(0.5)
        _mlp_backward(model.enc, *fwd.saved["enc"], g_h, grad_of, False)
    if cfg.learned_variance:
        # d/dlog sigma2 of D_e + (d/2) log sigma2_e = -D_e + d/2
        grad_of(model.log_sigma2).copy_(0.5 * fwd.x.shape[-1] - fwd.D)
