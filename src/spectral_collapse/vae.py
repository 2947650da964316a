"""Plain ``nn.Module`` beta-VAE encoders/decoders, with an ensemble dimension.

Every module holds ``E`` independent members (a single run is ``E = 1``): weights are shaped
``(E, in, out)`` and applied with ``torch.baddbmm``, so one forward/backward pass trains several scan
points at once while their parameters (and, with Adam, their updates) stay independent.

Tensor shapes: data ``x`` is ``(B, d)`` (shared by all members) or ``(E, B, d)``; latents are
``(E, B, L)``; reconstructions ``(E, B, d)``.

Families (docs/science.md section 3, issue 3):

- ``linear``: ``mu = x C + c``, one input-independent log-variance per latent, ``x_hat = z W + b``.
- ``mlp``: ``depth`` hidden layers of ``width`` units with SiLU in encoder and decoder, Kaiming init,
  encoder log-variance bias initialised to ``logvar_bias_init`` (-4).

Initial state of the latents (both families): ``logvar_bias_init`` sets the encoder log-variance (bias), and
``mean_init_scale`` multiplies the initial weights that map to the latents' means. The paper's start (-4, 1)
has every latent active; ``logvar_bias_init: 0`` with ``mean_init_scale: 0.01`` starts every latent collapsed
(variance at the prior, means near zero), so a latent the model needs grows out of the collapsed state, driven by
the reconstruction, while an unused one is already where it ends: at small beta the paper's start has to prune
the unused latents at a rate set by beta (issue 19's cold end).

The decoder variance ``sigma_dec^2`` is a fixed buffer (default) or a learned per-member scalar
(``learned_variance=True``, parametrised by its log, initialised at ``sigma2``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of one (ensemble of) VAE(s); stored in ``model.pt`` as ``hparams``. No field has a default
    here: build it with ``from_settings`` (a training job's settings) or ``build`` (a family and the fields that
    differ), which take what is not given from the config schema (workflow/schemas/config.schema.yaml,
    ``models.<family>`` and ``decoder``), the one place defaults live."""

    family: str  # linear | mlp
    n_features: int
    latents: int
    depth: int  # hidden layers (mlp only; 0 for linear)
    width: int  # hidden units (mlp only; 0 for linear)
    logvar_bias_init: float
    mean_init_scale: float  # factor on the initial weights of the latents' means (cold-end start, issue 19)
    learned_variance: bool
    sigma2: float  # sigma_dec^2 (initial value when learned)
    ensemble: int

    def __post_init__(self) -> None:
        if self.family not in ("linear", "mlp"):
            raise ValueError(f"unknown model family {self.family!r} (expected 'linear' or 'mlp')")
        if self.family == "mlp" and self.depth < 1:
            raise ValueError("an mlp needs depth >= 1 hidden layers")
        if not self.mean_init_scale > 0:
            raise ValueError(f"mean_init_scale must be > 0, got {self.mean_init_scale}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], n_features: int, ensemble: int = 1) -> "VAEConfig":
        """From a training job's settings (``scan.model_settings``: family, depth, the family's model block and
        the decoder block); a key the blocks lack takes the schema's default."""
        from .config import schema_defaults

        family = settings["family"]
        model = {**schema_defaults("models", family), **settings["model"]}
        decoder = {**schema_defaults("decoder"), **settings["decoder"]}
        return cls(
            family=family,
            n_features=int(n_features),
            latents=int(n_features if model["latents"] is None else model["latents"]),  # null: one per input
            depth=int(settings["depth"]),
            width=int(model.get("width", 0)),  # the linear family has no hidden layers
            logvar_bias_init=float(model["logvar_bias_init"]),
            mean_init_scale=float(model["mean_init_scale"]),
            learned_variance=decoder["variance"] == "learned",
            sigma2=float(decoder["sigma2"]),
            ensemble=int(ensemble),
        )

    @classmethod
    def build(cls, family: str, n_features: int, *, depth: int = 0, ensemble: int = 1,
              learned_variance: bool | None = None, sigma2: float | None = None, **model: Any) -> "VAEConfig":
        """A VAE of ``family`` with the given model-block fields (latents, width, logvar_bias_init,
        mean_init_scale) and decoder, the rest the schema's defaults: for tests, benchmarks and notebooks."""
        unknown = sorted(set(model) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown VAE settings {unknown} (expected some of {[f.name for f in fields(cls)]})")
        decoder = {"variance": "learned" if learned_variance else "fixed"} if learned_variance is not None else {}
        decoder.update({} if sigma2 is None else {"sigma2": sigma2})
        settings = {"family": family, "depth": depth, "model": model, "decoder": decoder}
        return cls.from_settings(settings, n_features=n_features, ensemble=ensemble)

    def with_ensemble(self, ensemble: int) -> "VAEConfig":
        """The same architecture with ``ensemble`` members."""
        return replace(self, ensemble=int(ensemble))


def as_members(x: torch.Tensor, ensemble: int) -> torch.Tensor:
    """A shared input (B, in) as (E, B, in) without a copy; an (E, B, in) input unchanged."""
    return x.unsqueeze(0).expand(ensemble, -1, -1) if x.dim() == 2 else x


class EnsembleLinear(nn.Module):
    """``E`` independent affine maps: ``y[e] = x[e] @ weight[e] + bias[e]``."""

    def __init__(self, ensemble: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(ensemble, 1, n_out))

    def reset_parameters(self, nonlinearity: str = "relu") -> None:
        # Kaiming (He) normal with fan_in = n_in for every member.
        gain = nn.init.calculate_gain(nonlinearity)
        std = gain / math.sqrt(self.weight.shape[1])
        with torch.no_grad():
            self.weight.normal_(0.0, std)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, as_members(x, self.weight.shape[0]), self.weight)


class EnsembleMLP(nn.Module):
    """``depth`` hidden SiLU layers of ``width`` units, then a linear output layer."""

    def __init__(self, ensemble: int, n_in: int, n_out: int, depth: int, width: int) -> None:
        super().__init__()
        dims = [n_in] + [width] * depth
        self.hidden = nn.ModuleList(EnsembleLinear(ensemble, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = EnsembleLinear(ensemble, dims[-1], n_out)
        self.act = nn.SiLU()
        for layer in self.hidden:
            layer.reset_parameters("relu")
        self.out.reset_parameters("linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same ops as calling the layers and the activation modules, without nn.Module.__call__ per layer
        # (its overhead is a sizeable part of a small model's step; issue 6).
        x = as_members(x, self.out.weight.shape[0])
        silu = torch.nn.functional.silu
        inplace = not torch.is_grad_enabled()  # no graph: overwrite the fresh pre-activation (one tensor less)
        for layer in self.hidden:
            x = silu(torch.baddbmm(layer.bias, x, layer.weight), inplace=inplace)
        return torch.baddbmm(self.out.bias, x, self.out.weight)


class VAE(nn.Module):
    """A beta-VAE (ensemble). ``encode`` -> (mu, logvar); ``decode`` -> x_hat; ``sigma2`` -> (E,)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        E, d, L = config.ensemble, config.n_features, config.latents
        if config.family == "linear":
            self.enc_mu = EnsembleLinear(E, d, L)
            self.enc_mu.reset_parameters("linear")
            with torch.no_grad():
                self.enc_mu.weight.mul_(float(config.mean_init_scale))
            self.enc_logvar = nn.Parameter(torch.full((E, 1, L), float(config.logvar_bias_init)))
            self.dec = EnsembleLinear(E, L, d)
            self.dec.reset_parameters("linear")
        else:
            # One trunk for mu and logvar: output layer of width 2L, logvar half biased to -4.
            self.enc = EnsembleMLP(E, d, 2 * L, config.depth, config.width)
            with torch.no_grad():
                self.enc.out.bias[..., L:] = float(config.logvar_bias_init)
                self.enc.out.weight[..., :L] *= float(config.mean_init_scale)
            self.dec = EnsembleMLP(E, L, d, config.depth, config.width)
        log_s2 = torch.full((E,), math.log(config.sigma2))
        if config.learned_variance:
            self.log_sigma2 = nn.Parameter(log_s2)
        else:
            self.register_buffer("log_sigma2", log_s2)

    @property
    def ensemble(self) -> int:
        return self.config.ensemble

    @property
    def sigma2(self) -> torch.Tensor:
        return self.log_sigma2.exp()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.family == "linear":
            mu = self.enc_mu(x)
            return mu, self.enc_logvar.expand_as(mu)
        h = self.enc(x)
        L = self.config.latents
        return h[..., :L], h[..., L:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)

    def decoder_column_norms(self) -> torch.Tensor:
        """||w_k||^2 of the linear decoder, shape (E, L) (linear family only)."""
        if self.config.family != "linear":
            raise ValueError("decoder column norms are defined for the linear family only")
        return self.dec.weight.detach().pow(2).sum(-1)

    def rows(self, a: int, b: int) -> "VAE":
        """The members ``[a, b)`` as a VAE whose parameters and buffers ARE rows ``[a, b)`` of this one's
        (views sharing storage: an update of either is seen by both). Built without initialising anything, so
        it draws nothing from the random generators (a resumed run builds these at other times than the
        uninterrupted one and must still see the same random stream)."""
        if not 0 <= a < b <= self.ensemble:
            raise ValueError(f"member rows [{a}, {b}) outside an ensemble of {self.ensemble}")
        view = copy.copy(self)  # the same class and config; every submodule replaced below
        view._modules = {name: _rows_of(module, a, b) for name, module in self._modules.items()}
        view._parameters = {name: _row_param(p, a, b) for name, p in self._parameters.items()}
        view._buffers = {name: t[a:b] for name, t in self._buffers.items()}
        view.config = self.config.with_ensemble(b - a)
        return view

    def member(self, e: int) -> "VAE":
        """A single-member (E = 1) copy of member ``e`` (its own storage)."""
        return copy.deepcopy(self.rows(e, e + 1))


def latent_parameters(model: VAE) -> tuple[list[tuple[torch.Tensor, int, int]], list[tuple[torch.Tensor, int, int]]]:
    """(encoder, decoder) lists of (parameter, axis, offset): the weights that belong to one latent alone, latent
    k's slice being index ``offset + k`` along ``axis``. Encoder: linear, the mean column and bias and the
    log-variance; mlp, the output layer's mean and log-variance outputs (weights and biases). Decoder: the
    weights from the latent (linear, the decoder row; mlp, the first layer's weights). The first of each list holds
    the mean's weights: what the stability check perturbs (``stability.collapsed_weights``)."""
    L = model.config.latents
    if model.config.family == "linear":
        return [(model.enc_mu.weight, 2, 0), (model.enc_mu.bias, 2, 0), (model.enc_logvar, 2, 0)], \
            [(model.dec.weight, 1, 0)]
    out = model.enc.out
    return [(out.weight, 2, 0), (out.weight, 2, L), (out.bias, 2, 0), (out.bias, 2, L)], \
        [(model.dec.hidden[0].weight, 1, 0)]


def stack_members(models: "Sequence[VAE]") -> VAE:
    """One ensemble VAE whose member ``e`` is ``models[e]`` (each a VAE of the same architecture, any
    ensemble size; members in order): the warm-start chain trains its points one by one and ships them as one
    group's ``model.pt``. Copies the weights."""
    if not models:
        raise ValueError("stack_members needs at least one model")
    first = models[0].config
    shape = {k: v for k, v in asdict(first).items() if k != "ensemble"}
    for m in models[1:]:
        other = {k: v for k, v in asdict(m.config).items() if k != "ensemble"}
        if other != shape:
            raise ValueError(f"cannot stack VAEs of different architectures: {shape} and {other}")
    return stack_states(first, [m.state_dict() for m in models])


def stack_states(config: VAEConfig, states: "Sequence[Mapping[str, torch.Tensor]]") -> VAE:
    """One ensemble VAE of ``config``'s architecture whose members are the ``state_dict``s ``states`` in order
    (each of any ensemble size), concatenated along the member dimension."""
    E = sum(int(next(iter(st.values())).shape[0]) for st in states)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays where it was
        out = VAE(config.with_ensemble(E))
    out.load_state_dict({k: torch.cat([st[k].detach().cpu() for st in states], dim=0) for k in states[0]})
    return out


def _row_param(p: nn.Parameter, a: int, b: int) -> nn.Parameter:
    return nn.Parameter(p.data[a:b], requires_grad=p.requires_grad)


def _rows_of(module: nn.Module, a: int, b: int) -> nn.Module:
    """A shallow copy of ``module`` whose parameters (leading dimension = member) are row views [a, b)."""
    if isinstance(module, nn.SiLU):
        return module
    view = copy.copy(module)
    view._modules = {name: _rows_of(m, a, b) for name, m in module._modules.items()}
    view._parameters = {name: _row_param(p, a, b) for name, p in module._parameters.items()}
    view._buffers = {name: t[a:b] for name, t in module._buffers.items()}
    return view


def negative_elbo_terms(
    model: VAE, x: torch.Tensor, noise: torch.Tensor | None = None,
    encoded: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-member (D, R, log-normaliser) batch means, each of shape (E,), docs/science.md section 2.

    D = mean_n ||x - x_hat(z)||^2 / (2 sigma_dec^2): a SUM over the features, with the 1/2.
    R = mean_n sum_k KL(q(z_k|x) || N(0,1)): a SUM over latents.
    The third term is (d/2) log sigma_dec^2 (zero gradient when the variance is fixed; needed when it is
    learned, else sigma_dec^2 would run off). It is not part of D as the study defines it.
    This is the reference expression, differentiable by autograd; training uses ``elbo_grad`` (the same
    forward ops, the gradient written out by hand), which the tests check against it.
    """
    mu, logvar = model.encode(x) if encoded is None else encoded  # encoded: (mu, logvar) already computed
    if noise is None:
        noise = torch.randn_like(mu)
    z = mu + torch.exp(0.5 * logvar) * noise
    x_hat = model.decode(z)
    sq = (x_hat - x).pow(2).sum(-1).mean(-1)  # (E,)
    R = (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).sum(-1).mean(-1)
    sigma2 = model.sigma2
    D = sq / (2.0 * sigma2)
    lognorm = 0.5 * x.shape[-1] * model.log_sigma2
    return D, R, lognorm


def save_trained(path: str | Path, model: VAE, meta: Mapping[str, Any]) -> None:
    """Write ``model.pt`` = {"state_dict", "hparams", **meta} atomically (meta: T, beta, V, seed, ...)."""
    from .provenance import atomic_path

    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "hparams": asdict(model.config),
        **dict(meta),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_trained(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[VAE, dict[str, Any]]:
    """Load ``model.pt``: returns ``(model, meta)`` with the model in eval mode.

    ``meta`` holds everything else stored: T, beta, V, seed (lists for an ensemble), hparams.
    Encode with ``model.encode(torch.as_tensor(x))`` or the numpy helper ``encode_array``.
    """
    payload = torch.load(path, map_location=map_location, weights_only=False)
    model = VAE(VAEConfig(**payload["hparams"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta


@torch.no_grad()
def encode_array(model: VAE, x: np.ndarray, member: int = 0, rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of one member for a numpy array (n, d): two (n, L) arrays."""
    device = model.log_sigma2.device
    mus, logvars = [], []
    for start in range(0, len(x), rows):
        xb = torch.as_tensor(np.asarray(x[start : start + rows], dtype=np.float32), device=device)
        mu, logvar = model.encode(xb)
        mus.append(mu[member].cpu().numpy())
        logvars.append(logvar[member].cpu().numpy())
    return np.concatenate(mus), np.concatenate(logvars)


@torch.no_grad()
def decode_array(model: VAE, z: np.ndarray, member: int = 0, rows: int = 65536) -> np.ndarray:
    """Decode latent codes (n, L) of one member into (n, d)."""
    device = model.log_sigma2.device
    out = []
    for start in range(0, len(z), rows):
        zb = torch.as_tensor(np.asarray(z[start : start + rows], dtype=np.float32), device=device)
        full = zb.unsqueeze(0).expand(model.ensemble, -1, -1)
        out.append(model.decode(full)[member].cpu().numpy())
    return np.concatenate(out)
