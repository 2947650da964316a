"""The training and measurement path on CUDA against the CPU (issue 14). Marked ``cuda``; skipped, saying so,
where there is no CUDA GPU. ``pytest -m cuda tests/test_cuda.py`` (``benchmarks/gpu_check.py`` runs it).

Compared, CUDA against CPU, from the same weights, batches and noise:

- one training update, as ``BetaVAESystem.training_step`` does it: ``elbo_grad`` forward and hand-written
  backward over the contiguous runs of training members (``VAE.rows`` views) into FusedAdam's flat gradient,
  then ``FusedAdam.step_members``; first a full update (``torch.optim.Adam(fused=True)`` creates the state on
  the device), then one on a group with a frozen member and a member at an annealed learning rate;
- one validation pass of ``BetaVAESystem`` through a Lightning ``Trainer`` (cell-area weights, two validation
  batches, a frozen member; the cached fixed noise must be the very same tensor on both devices);
- one ``measure.measure_split`` (weighted, noise drawn across two noise chunks).

On CUDA alone (no CPU run gives the same training noise): a whole job (``training.train``) trains there,
freezes a converged member, and a job killed after a checkpoint resumes bit for bit (the CUDA generator state
is in the checkpoint); and the update loop makes no host synchronisation per update
(``torch.cuda.set_sync_debug_mode`` counts them).

Tolerances (float32 everywhere, as the training job runs). TF32 is off (``allow_tf32 = False``, precision
"highest": PyTorch's default and what the training job uses). With TF32 the matrix products would round their
inputs to 10-bit mantissas (relative error ~5e-4) and these tolerances would fail, as they should: that is a
change of results, not float rounding. What legitimately differs between the devices is the order of the
additions inside matrix products and reductions (cuBLAS and the CPU BLAS split the inner dimension
differently; CUDA reduces in a tree) and the last bits of exp / sigmoid. A float32 sum of n terms in two
orders differs by at most ~2(n-1)u sum|x_i| (u = 2^-24 = 6e-8); the longest reduction of an update is the
batch, n = 256: 3e-5 of the summed magnitudes, typically sqrt(n) u ~ 1e-6. So each compared tensor must agree
within ``RTOL = 1e-4`` of its scale (its largest magnitude on the CPU): ~3x the worst case of one reduction,
room for the cancellation in sums of both signs (bias gradients) and the few chained operations; a real
defect (a wrong member row, a stale or missing gradient, noise of another draw, a step on a frozen member)
differs by O(1) of the scale. The validation means reduce 65,536 rows per batch, but pairwise (CPU) and tree
(CUDA) summation keep that to ~log2(n) u = 1e-6; the measurement accumulates in float64.

Adam's step is compared given the SAME gradient (the CPU one copied onto the device), within ``RTOL_STEP =
1e-6`` of the scale: its update lr m/(sqrt(v) + eps) amplifies a gradient difference dg near g = 0 by lr/eps
= 1e6 (an entry whose gradient rounds to +1e-9 on one device and -1e-9 on the other moves the other way),
which is Adam's conditioning, not the device's. Given the same gradient, both kernels compute the same
elementwise formula: a few ulp of a parameter (scale ~1, ulp 1.2e-7).

``CUDA_TESTS_DEVICE=cpu`` runs these comparisons with the CPU standing in for the GPU (the CPU dry run of
``benchmarks/gpu_check.py``: it checks the test code itself, not CUDA).
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from freezing import FREEZE, FREEZE_T, CrashAt, Killed, freeze_data

from spectral_collapse import elbo_grad
from spectral_collapse.datamodule import ArrayDataModule
from spectral_collapse.lightning_module import BetaVAESystem
from spectral_collapse.measure import NOISE_ROWS, measure_split
from spectral_collapse.training import train
from spectral_collapse.vae import VAE, VAEConfig

DEVICE = os.environ.get("CUDA_TESTS_DEVICE", "cuda")
NO_GPU = DEVICE == "cuda" and not torch.cuda.is_available()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(NO_GPU, reason="no CUDA GPU on this machine: these tests compare the training and "
                                      "measurement path on CUDA against the CPU and need a GPU "
                                      "(benchmarks/gpu_check.py runs them there)"),
]
ACCELERATOR = "gpu" if DEVICE == "cuda" else "cpu"
RTOL = 1e-4  # of a tensor's scale: float32 reductions in another order (module docstring)
RTOL_STEP = 1e-6  # Adam's step given the same gradient: a few ulp
LR = 1e-2
SPECTRUM = np.array([9.8, 4.2, 1.9, 1.2, 0.65, 0.53, 0.31, 0.17, 0.11, 0.067, 0.05, 0.04, 0.03, 0.02, 0.015,
                     0.01, 0.008, 0.005, 0.003])  # 19 features, WorldClim-like eigenvalues


@pytest.fixture(autouse=True)
def full_float32_products():
    """TF32 off for the comparison (PyTorch's default; the training job never turns it on)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def _close(dev, cpu, rtol: float, what: str) -> None:
    """``dev`` (any device) equals ``cpu`` within ``rtol`` of the CPU tensor's scale (its largest magnitude)."""
    a = torch.as_tensor(dev).detach().cpu().double()
    b = torch.as_tensor(cpu).detach().cpu().double()
    assert a.shape == b.shape, what
    scale = b.abs().max().item() if b.numel() else 0.0
    diff = (a - b).abs().max().item() if b.numel() else 0.0
    assert diff <= rtol * max(scale, 1e-30), f"{what}: max |difference| {diff:.3g} > {rtol:g} x scale {scale:.3g}"


def _sample(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.standard_normal((n, len(SPECTRUM))) * np.sqrt(SPECTRUM)).astype(np.float32)


def _vae(family: str, E: int, *, learned: bool = False, logvar_bias: float = -1.0, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(VAEConfig.build(family=family, n_features=len(SPECTRUM), latents=8, depth=2 if family == "mlp" else 0,
                         width=32, ensemble=E, learned_variance=learned, logvar_bias_init=logvar_bias))


# ------------------------------------------------------------------------------------------ one update


def _system(vae: VAE, T: list[float], device: str) -> BetaVAESystem:
    system = BetaVAESystem(vae, T, V=float(SPECTRUM.sum()), lr=LR).to(device)
    system.configure_optimizers()  # FusedAdam over the parameters where they are (as Lightning calls it)
    return system


def _gradients(system: BetaVAESystem, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The body of one training update up to the optimizer step (training_step's inner loop, with given noise):
    the loss of every training member; its gradient written into the flat buffer."""
    learned = system.vae.config.learned_variance
    losses = torch.full((system.vae.ensemble,), float("nan"), device=x.device)
    for a, b, view, grad_of in system._training_rows():
        fwd = elbo_grad.forward(view, x, noise[a:b], keep=True)
        elbo_grad.backward(view, fwd, system.beta[a:b], grad_of)
        losses[a:b] = fwd.loss(system.beta[a:b], learned)
    return losses


@pytest.mark.parametrize("family,learned", [("mlp", False), ("linear", True)])
def test_one_update_matches_cpu(family, learned):
    """A full update, then one with member 1 frozen and member 3 at an annealed lr: the losses and the
    gradients of the training members within RTOL of the CPU's; given the same gradient, Adam's state and the
    parameters within RTOL_STEP; the frozen member's rows untouched (bitwise) on both devices."""
    E, B, T = 4, 256, [0.5, 0.1, 0.02, 0.005]
    cpu = _system(_vae(family, E, learned=learned), T, "cpu")
    dev = _system(copy.deepcopy(_vae(family, E, learned=learned)), T, DEVICE)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(1)
    for step, (training, lrs) in enumerate([([True] * E, [LR] * E),
                                            ([True, False, True, True], [LR, LR, LR, LR * 0.1])]):
        for system in (cpu, dev):
            system.set_members(training, lrs)
        x = torch.from_numpy(_sample(rng, B))
        noise = torch.randn((E, B, 8), generator=gen)
        frozen_before = [{k: v[1].clone() for k, v in s.vae.state_dict().items()} for s in (cpu, dev)]
        loss_cpu = _gradients(cpu, x, noise)
        loss_dev = _gradients(dev, x.to(DEVICE), noise.to(DEVICE))
        on = torch.tensor(training)
        _close(loss_dev.cpu()[on], loss_cpu[on], RTOL, f"step {step}: losses")
        for (name, p_cpu), p_dev in zip(cpu.vae.named_parameters(), dev.vae.parameters()):
            assert p_dev.device.type == torch.device(DEVICE).type, name
            g_cpu, g_dev = cpu._opt.grad_view(p_cpu), dev._opt.grad_view(p_dev)
            _close(g_dev.cpu()[on], g_cpu[on], RTOL, f"step {step}: gradient of {name}")
        dev._opt.flat_grad.copy_(cpu._opt.flat_grad)  # Adam compared given the same gradient (docstring)
        for system in (cpu, dev):
            system._opt.step_members(system._lr_ranges())
        state_cpu, state_dev = cpu._opt.state[cpu._opt.flat], dev._opt.state[dev._opt.flat]
        assert state_dev["step"].device == dev._opt.flat.device and float(state_dev["step"]) == step + 1
        for key in ("exp_avg", "exp_avg_sq"):
            _close(state_dev[key], state_cpu[key], RTOL_STEP, f"step {step}: Adam {key}")
        for (name, p_cpu), p_dev in zip(cpu.vae.named_parameters(), dev.vae.parameters()):
            _close(p_dev, p_cpu, RTOL_STEP, f"step {step}: parameter {name}")
        if not all(training):  # member 1 frozen: not one bit of it changes, on either device
            for before, system in zip(frozen_before, (cpu, dev)):
                for k, v in system.vae.state_dict().items():
                    assert torch.equal(v[1], before[k]), f"frozen member changed: {k}"


# ------------------------------------------------------------------------------------ validation pass


def _validate(vae: VAE, x: np.ndarray, w: np.ndarray, device: str) -> BetaVAESystem:
    system = BetaVAESystem(vae, [1.0, 0.1, 0.01], V=float(SPECTRUM.sum()), lr=LR)
    system.set_members([True, False, True], [LR] * 3)
    data = ArrayDataModule(x[:1000], x, weights={"validation": w})
    data.place(device)  # as on_fit_start does for a training job
    trainer = pl.Trainer(accelerator="gpu" if device != "cpu" else "cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.validate(system, datamodule=data, verbose=False)
    return system


def test_validation_pass_matches_cpu():
    """One validation pass (70,000 weighted cells: two validation batches, member 1 frozen): val_loss, D, R
    and M^2 of the training members within RTOL of the CPU's, the frozen member not evaluated, and the cached
    fixed noise the same tensor on both devices (drawn by the CPU generator). Posterior std 1
    (log-variance bias 0), so that noise of another draw would show."""
    rng = np.random.default_rng(2)
    x = _sample(rng, 70_000)
    w = rng.uniform(0.2, 1.0, len(x))
    vae = _vae("mlp", 3, logvar_bias=0.0)
    cpu = _validate(copy.deepcopy(vae), x, w, "cpu")
    dev = _validate(copy.deepcopy(vae), x, w, DEVICE)
    assert set(cpu.val_noise.cache) == set(dev.val_noise.cache) == {0, 1}  # two batches, both kept
    for k, noise in cpu.val_noise.cache.items():
        assert dev.val_noise.cache[k].device.type == torch.device(DEVICE).type
        assert torch.equal(dev.val_noise.cache[k].cpu(), noise), f"validation noise of batch {k}"
    a, b = dev.last_eval, cpu.last_eval
    for key in ("val_loss", "val_D", "val_R", "m2"):
        assert a[key][1] is None and b[key][1] is None, key  # frozen: not evaluated
        for e in (0, 2):
            _close(torch.tensor(a[key][e]), torch.tensor(b[key][e]), RTOL, f"{key} of member {e}")


# ---------------------------------------------------------------------------------------- measurement


@pytest.mark.parametrize("family", ["mlp", "linear"])
def test_measurement_matches_cpu(family):
    """measure_split on 40,000 weighted rows (two noise chunks): every quantity within RTOL of the CPU's, the
    ranks and the active sets equal (the sampled D too: the noise is the CPU generator's on every device)."""
    rng = np.random.default_rng(3)
    x = _sample(rng, 40_000)
    assert len(x) > NOISE_ROWS
    w = rng.uniform(0.2, 1.0, len(x))
    vae = _vae(family, 3, logvar_bias=-2.0, seed=4)
    cpu = measure_split(copy.deepcopy(vae), x, float(SPECTRUM.sum()), 0.1, weights=w)
    dev = measure_split(copy.deepcopy(vae).to(DEVICE), x, float(SPECTRUM.sum()), 0.1, weights=w)
    m2 = np.sort(cpu["M2"], axis=1)
    # precondition: no two M^2 within 1e-5 (their rounding across devices is ~1e-7), so the ranks are well posed
    assert np.diff(m2, axis=1).min() > 1e-5, "M^2 values too close to rank them reproducibly"
    assert set(dev) == set(cpu)
    for key, value in cpu.items():
        if value.dtype == bool or np.issubdtype(value.dtype, np.integer):
            assert np.array_equal(dev[key], value), key
        elif np.isnan(value).all():
            assert np.isnan(dev[key]).all(), key
        else:
            _close(torch.from_numpy(dev[key]), torch.from_numpy(value), RTOL, key)


# ----------------------------------------------------------------------------- a whole job on the device

def _job(run_dir, callbacks=()):
    return train(freeze_data(), {"family": "linear", "latents": 5}, FREEZE_T, settings=FREEZE, seed=0,
                 run_dir=run_dir, threads=1, progress=False, accelerator=ACCELERATOR, extra_callbacks=callbacks)


def test_training_job_runs_on_the_device_freezes_and_resumes_bit_for_bit(tmp_path):
    """training.train on the device: it trains there (record 'device'), a member converges and freezes, and
    a job killed right after a checkpoint taken once that member froze resumes exactly as the uninterrupted
    job (same weights, same record): the CUDA generator state travels in the checkpoint."""
    ref = _job(tmp_path / "ref")
    assert ref.record["device"].startswith(DEVICE), ref.record["device"]
    members, end = ref.record["members"], ref.record["updates"]
    frozen = members[0]["converged_at"]
    assert frozen is not None and frozen < end, members
    crash = frozen + FREEZE["eval_every"]
    assert crash < end and members[1]["updates"] > crash, ref.record
    with pytest.raises(Killed):
        _job(tmp_path / "run", [CrashAt(crash)])
    again = _job(tmp_path / "run")
    assert again.record["resumed_from_step"] == crash
    for (name, a), b in zip(ref.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(members, again.record["members"]):
        assert (a["converged_at"], a["updates"], a["lr_drops_done"], a["status"]) == (
            b["converged_at"], b["updates"], b["lr_drops_done"], b["status"])


class _CountSyncs(pl.Callback):
    """Counts the host synchronisations inside the training batches (each batch: eval_every updates); from the
    start, member 1 is frozen and member 2 trains at an annealed lr (as callbacks.Convergence would set them),
    so the updates run over two runs of member rows with two learning rates."""

    def __init__(self) -> None:
        self.batches, self.syncs, self._caught = 0, 0, None

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.set_members([True, False, True], [pl_module.lr, pl_module.lr, 0.1 * pl_module.lr])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._caught = warnings.catch_warnings(record=True)
        self._log = self._caught.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self._caught.__exit__(None, None, None)
        self.syncs += sum("synchroniz" in str(w.message) for w in self._log)
        self.batches += 1


def test_no_host_sync_per_update(tmp_path):
    """The update loop queues its work without waiting for the GPU: over 2 training batches of 100 updates
    (an mlp group of 3, one member frozen, one at an annealed lr), the synchronising CUDA calls counted by
    torch.cuda.set_sync_debug_mode are the one finite-loss check per batch (at most 2 per batch allowed for
    Lightning's own), not one or more per update."""
    if DEVICE != "cuda":
        pytest.skip("counting CUDA synchronisations needs CUDA (CPU rehearsal)")
    rng = np.random.default_rng(6)
    x = _sample(rng, 20_000)
    counter = _CountSyncs()
    st = {"lr": 3e-4, "batch_size": 256, "max_updates": 200, "tolerance": 1e-12, "patience_fraction": 1.0,
          "eval_every": 100}
    result = train(ArrayDataModule(x, x[:2000]), {"family": "mlp", "latents": 8, "depth": 2, "width": 32},
                   [1.0, 0.1, 0.01], settings=st, seed=0, run_dir=tmp_path, threads=1, progress=False,
                   accelerator=ACCELERATOR, extra_callbacks=[counter])
    assert result.record["updates"] == 200 and counter.batches == 2
    assert 1 <= counter.syncs <= 2 * counter.batches, f"{counter.syncs} synchronisations in 200 updates"
