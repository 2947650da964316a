"""The performance edits of issue 6 change no results: the flat fused Adam is Adam, the hand-written
backward of the loss is the autograd gradient, the chunked batch stream is the per-batch stream, and a
budget that is not a multiple of the evaluation interval is still met exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from spectral_collapse.datamodule import ArrayDataModule
from spectral_collapse.lightning_module import FusedAdam
from spectral_collapse.training import train
from spectral_collapse.vae import VAE, VAEConfig, negative_elbo_terms


def _loss(model, x, noise, beta):
    D, R, lognorm = negative_elbo_terms(model, x, noise)
    loss = D + beta * R
    if model.config.learned_variance:
        loss = loss + lognorm
    return loss.sum()


@pytest.mark.parametrize("family", ["mlp", "linear"])
def test_flat_fused_adam_is_adam(family):
    """Bitwise the parameters of torch.optim.Adam(fused=True), through an lr change and a state round trip."""
    torch.manual_seed(0)
    cfg = VAEConfig(family=family, n_features=19, latents=8, depth=2 if family == "mlp" else 0, width=16,
                    ensemble=3, learned_variance=(family == "linear"))
    ref, new = VAE(cfg), None
    new = copy.deepcopy(ref)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-2, fused=True)
    opt_new = FusedAdam(new.parameters(), lr=1e-2)
    beta = torch.tensor([0.5, 2.0, 7.0])
    for step in range(30):
        if step == 15:  # what the lr drops of the convergence rule do
            for opt in (opt_ref, opt_new):
                opt.param_groups[0]["lr"] *= 0.1
        if step == 20:  # checkpoint round trip
            state = copy.deepcopy(opt_new.state_dict())
            opt_new = FusedAdam(new.parameters(), lr=1e-3)
            opt_new.load_state_dict(state)
        x, noise = torch.randn(64, 19), torch.randn(3, 64, 8)
        for model, opt in ((ref, opt_ref), (new, opt_new)):
            opt.zero_grad(set_to_none=True)
            _loss(model, x, noise, beta).backward()
            opt.step()
    for (name, a), (_, b) in zip(ref.named_parameters(), new.named_parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name


@pytest.mark.parametrize("family,learned", [("mlp", False), ("linear", False), ("linear", True)])
def test_hand_written_backward_is_the_autograd_gradient(family, learned):
    torch.manual_seed(1)
    cfg = VAEConfig(family=family, n_features=19, latents=6, depth=2 if family == "mlp" else 0, width=16,
                    ensemble=3, learned_variance=learned)
    model = VAE(cfg).double()
    x, noise = torch.randn(50, 19, dtype=torch.double), torch.randn(3, 50, 6, dtype=torch.double)
    beta = torch.tensor([0.3, 1.0, 4.0], dtype=torch.double)
    model.zero_grad()
    fast = _loss(model, x, noise, beta)
    fast.backward()
    g_fast = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # the plain expression of STUDY.md section 2, differentiated by autograd
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * noise
    D = (model.decode(z) - x).pow(2).sum(-1).mean(-1) / (2 * model.sigma2)
    R = (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).sum(-1).mean(-1)
    ref = D + beta * R + (0.5 * 19 * model.log_sigma2 if learned else 0.0)
    ref = ref.sum()
    ref.backward()
    assert torch.equal(fast.detach(), ref.detach())  # forward: the same ops
    for p, g in zip(model.parameters(), g_fast):
        assert torch.allclose(g, p.grad, rtol=1e-12, atol=1e-14)


def test_chunks_are_the_per_batch_stream():
    x = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
    dm = ArrayDataModule(x, batch_size=64, eval_every=10, seed=3)
    idx = dm.epoch_indices(0, 10)
    chunks = list(dm.train_dataloader())
    assert len(chunks) == 1 and chunks[0].shape == (10, 64, 3)
    for i in range(10):
        assert torch.equal(chunks[0][i], dm.train_tensor[idx[i]])


def test_budget_not_a_multiple_of_eval_every(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2000, 5)) * np.array([2.0, 1.5, 1.0, 0.5, 0.2])).astype(np.float32)
    dm = ArrayDataModule(x, x[:500], x[:500])
    st = {"lr": 3e-3, "batch_size": 128, "max_updates": 130, "tolerance": 0.0, "patience_fraction": 0.5,
          "eval_every": 50}
    result = train(dm, {"family": "linear", "latents": 5}, 0.1, settings=st, seed=0, run_dir=tmp_path / "r",
                   threads=1, progress=False)
    assert result.summary["updates"] == 130
