"""The performance edits of issue 6 change no results: the flat fused Adam is Adam, the hand-written
gradient of the loss (elbo_grad) is the autograd gradient and the training path's updates are autograd +
Adam updates, the stacked batch stream is the per-batch stream, the cached validation noise is the noise
drawn afresh, and a budget that is not a multiple of the evaluation interval is still met exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from spectral_collapse import elbo_grad, fixed_noise
from spectral_collapse import lightning_module as lm
from spectral_collapse.datamodule import ArrayDataModule
from spectral_collapse.fused_adam import FusedAdam
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
    cfg = VAEConfig.build(family=family, n_features=19, latents=8, depth=2 if family == "mlp" else 0, width=16,
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


@pytest.mark.parametrize("family,learned", [("mlp", False), ("mlp", True), ("linear", False), ("linear", True)])
def test_hand_written_gradient_is_the_autograd_gradient(family, learned):
    """elbo_grad: the loss bit for bit, and the gradient of every parameter to 1e-12 (float64), against the
    plain expression of docs/science.md section 2 differentiated by autograd; every gradient slot is written."""
    torch.manual_seed(1)
    cfg = VAEConfig.build(family=family, n_features=19, latents=6, depth=2 if family == "mlp" else 0, width=16,
                    ensemble=3, learned_variance=learned)
    model = VAE(cfg).double()
    x, noise = torch.randn(50, 19, dtype=torch.double), torch.randn(3, 50, 6, dtype=torch.double)
    beta = torch.tensor([0.3, 1.0, 4.0], dtype=torch.double)
    written = {id(p): torch.full_like(p, float("nan")) for p in model.parameters() if p.requires_grad}
    fwd = elbo_grad.forward(model, x, noise, keep=True)
    elbo_grad.backward(model, fwd, beta, lambda p: written[id(p)])
    fast = fwd.loss(beta, learned)
    # the plain expression of docs/science.md section 2, differentiated by autograd
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * noise
    D = (model.decode(z) - x).pow(2).sum(-1).mean(-1) / (2 * model.sigma2)
    R = (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).sum(-1).mean(-1)
    ref = D + beta * R + (0.5 * 19 * model.log_sigma2 if learned else 0.0)
    ref.sum().backward()
    assert torch.equal(fast, ref.detach())  # forward: the same ops
    for name, p in model.named_parameters():  # NaN-filled slots: a gradient that is not written fails here
        assert torch.allclose(written[id(p)], p.grad, rtol=1e-12, atol=1e-14), name


def test_backward_needs_the_saved_forward():
    model = VAE(VAEConfig.build(family="mlp", n_features=5, latents=2, depth=1, width=4))
    fwd = elbo_grad.forward(model, torch.randn(8, 5))
    with pytest.raises(ValueError, match="keep=True"):
        elbo_grad.backward(model, fwd, torch.ones(1), lambda p: torch.empty_like(p))


@pytest.mark.parametrize("family", ["mlp", "linear"])
def test_training_updates_are_autograd_adam_updates(family):
    """30 updates of the training step's path (elbo_grad into FusedAdam's flat gradient, step_flat) against
    autograd + torch.optim.Adam(fused=True) on the same batches and noise: the same parameters up to float32
    rounding; and members that start from the same weights but have different beta end up different."""
    torch.manual_seed(0)
    cfg = VAEConfig.build(family=family, n_features=19, latents=8, depth=2 if family == "mlp" else 0, width=16, ensemble=3)
    ref = VAE(cfg)
    with torch.no_grad():  # every member starts from member 0's weights
        for p in ref.parameters():
            p.copy_(p[:1].clone().expand_as(p))
    new = copy.deepcopy(ref)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-2, fused=True)
    opt_new = FusedAdam(new.parameters(), lr=1e-2)
    beta = torch.tensor([0.5, 2.0, 7.0])
    for _ in range(30):
        x, noise = torch.randn(64, 19), torch.randn(1, 64, 8)  # the same noise for every member
        opt_ref.zero_grad(set_to_none=True)
        _loss(ref, x, noise.expand(3, -1, -1), beta).backward()
        opt_ref.step()
        fwd = elbo_grad.forward(new, x, noise.expand(3, -1, -1), keep=True)
        elbo_grad.backward(new, fwd, beta, opt_new.grad_view)
        opt_new.step_flat()
    for (name, a), (_, b) in zip(ref.named_parameters(), new.named_parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    enc = dict(new.named_parameters())["enc.out.bias" if family == "mlp" else "enc_logvar"]
    assert not torch.allclose(enc[0], enc[2], atol=1e-3)  # beta 0.5 vs 7: other posterior variances


def test_stacked_batches_are_the_per_batch_stream():
    x = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
    dm = ArrayDataModule(x, batch_size=64, eval_every=10, seed=3)
    idx = dm.epoch_indices(0, 10)
    stacks = list(dm.train_dataloader())
    assert len(stacks) == 1 and stacks[0].shape == (10, 64, 3)
    for i in range(10):
        assert torch.equal(stacks[0][i], dm.train_tensor[idx[i]])


def test_budget_not_a_multiple_of_eval_every(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2000, 5)) * np.array([2.0, 1.5, 1.0, 0.5, 0.2])).astype(np.float32)
    dm = ArrayDataModule(x, x[:500], x[:500])
    st = {"lr": 3e-3, "batch_size": 128, "max_updates": 130, "tolerance": 0.0, "patience_fraction": 0.5,
          "eval_every": 50}
    result = train(dm, {"family": "linear", "latents": 5}, 0.1, settings=st, seed=0, run_dir=tmp_path / "r",
                   threads=1, progress=False)
    assert result.record["updates"] == 130


@pytest.mark.parametrize("cap", [fixed_noise.CACHE_BYTES, 0])
def test_validation_noise_is_the_fixed_draw_whether_cached_or_not(monkeypatch, cap):
    """Every evaluation sees the noise of a generator seeded with 987654 + batch index, kept or drawn again."""
    monkeypatch.setattr(fixed_noise, "CACHE_BYTES", cap)
    cfg = VAEConfig.build(family="mlp", n_features=5, latents=3, depth=1, width=4, ensemble=2)
    module = lm.BetaVAESystem(VAE(cfg), [0.1, 0.2], V=5.0, lr=1e-3)
    for rows, idx in ((70, 0), (70, 1), (70, 0), (70, 1), (40, 0), (70, 1), (40, 0)):  # 40: another split size
        expected = torch.randn((2, rows, 3), generator=torch.Generator().manual_seed(987654 + idx))
        assert torch.equal(module.validation_noise(torch.randn(rows, 5), idx), expected)
    assert len(module.val_noise.cache) == (2 if cap else 0)


def test_member_ranges_follow_a_state_loaded_into_the_same_optimizer():
    """step_members caches its row views per range: after a state is loaded into the SAME optimizer (new state
    tensors) it updates with the loaded state, bit for bit as a fresh optimizer does; rows in no range stay."""
    torch.manual_seed(0)
    cfg = VAEConfig.build(family="mlp", n_features=19, latents=4, depth=1, width=8, ensemble=4)
    a = VAE(cfg)
    b, start = copy.deepcopy(a), copy.deepcopy(a)
    opt_a, opt_b = FusedAdam(a.parameters(), lr=1e-2), FusedAdam(b.parameters(), lr=1e-2)
    ranges = [(0, 1, 1e-2), (2, 4, 1e-3)]  # member 1 frozen, members 2-3 annealed
    for step in range(6):
        grads = [torch.randn_like(p) for p in a.parameters()]
        if step == 1:
            state = copy.deepcopy(opt_a.state_dict())  # loaded later: other moments than the current ones
        if step == 3:
            opt_a.load_state_dict(copy.deepcopy(state))
            opt_b = FusedAdam(b.parameters(), lr=1e-2)
            opt_b.load_state_dict(copy.deepcopy(state))
        for model, opt in ((a, opt_a), (b, opt_b)):
            for p, g in zip(model.parameters(), grads):
                opt.grad_view(p).copy_(g)
            opt.step_members(ranges)
    for (name, p), q, p0 in zip(a.named_parameters(), b.parameters(), start.parameters()):
        assert torch.equal(p, q), name
        assert torch.equal(p[1], p0[1]) and not torch.equal(p[0], p0[0]), name


def test_the_benchmark_times_the_figures_it_claims(tmp_path, monkeypatch):
    """`make bench` times the figure code on synthetic scan tables when there are no cached ones: it must draw
    them (a renamed input once turned the line into "n/a (No module named ...)", issue 21 item 9)."""
    import importlib.util
    from pathlib import Path

    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "no-results"))
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))  # its helpers: benchmarks/common.py
    path = benchmarks / "bench_step.py"
    spec = importlib.util.spec_from_file_location("bench_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config, _ = bench.load_config()
    seconds, note = bench.figure_timing(config, tmp_path)
    assert float(seconds) > 0 and note.startswith("4 figures (PNG+PDF)"), (seconds, note)
