"""Training job: loss conventions, beta mapping, NaN guard, same-seed determinism, kill-and-resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spectral_collapse.datamodule import ArrayDataModule
from spectral_collapse.lightning_module import BetaVAESystem, NonFiniteLossError
from spectral_collapse.measure import measure_tables
from spectral_collapse.training import train
from spectral_collapse.vae import VAE, VAEConfig, load_trained, negative_elbo_terms, save_trained

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(lr=3e-3, batch_size=128, max_updates=200, tolerance=1e-3, patience_fraction=0.25, eval_every=50)


def gaussian(n: int = 4000, lam=(4.0, 2.0, 1.0, 0.5, 0.25), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, len(lam))) * np.sqrt(lam)).astype(np.float32)


def test_loss_is_a_sum_over_features_with_half_and_kl_summed_over_latents():
    """docs/science.md section 2: D = mean ||x - x_hat||^2 / (2 sigma^2) summed over features; R summed over latents."""
    torch.manual_seed(0)
    cfg = VAEConfig.build(family="linear", n_features=3, latents=2, sigma2=0.5, logvar_bias_init=-1.0)
    model = VAE(cfg)
    x = torch.randn(7, 3)
    noise = torch.randn(1, 7, 2)
    D, R, lognorm = negative_elbo_terms(model, x, noise)
    C, c = model.enc_mu.weight[0].detach(), model.enc_mu.bias[0].detach()
    W, b = model.dec.weight[0].detach(), model.dec.bias[0].detach()
    mu = x @ C + c
    logvar = torch.full_like(mu, -1.0)
    z = mu + torch.exp(0.5 * logvar) * noise[0]
    x_hat = z @ W + b
    D_ref = ((x - x_hat) ** 2).sum(1).mean() / (2 * 0.5)
    R_ref = (0.5 * (mu**2 + logvar.exp() - logvar - 1)).sum(1).mean()
    assert torch.allclose(D, D_ref.reshape(1), rtol=1e-5)
    assert torch.allclose(R, R_ref.reshape(1), rtol=1e-5)
    assert torch.allclose(lognorm, torch.tensor([1.5 * math.log(0.5)]))


def test_beta_is_T_V_over_sigma2_and_ensemble_members_are_independent():
    cfg = VAEConfig.build(family="mlp", n_features=5, latents=4, depth=2, width=8, sigma2=2.0, ensemble=3)
    module = BetaVAESystem(VAE(cfg), [0.1, 0.01, 1.0], V=19.0, lr=1e-3)
    assert torch.allclose(module.beta, torch.tensor([0.1 * 19 / 2, 0.01 * 19 / 2, 19 / 2]))
    # the gradient of member 1's parameters does not depend on member 0's loss
    x = torch.randn(32, 5)

    def loss():
        torch.manual_seed(1)
        D, R, _ = negative_elbo_terms(module.vae, x)
        return D + module.beta * R

    (g_all,) = torch.autograd.grad(loss().sum(), [module.vae.dec.out.weight])
    (g_one,) = torch.autograd.grad(loss()[1], [module.vae.dec.out.weight])
    assert torch.equal(g_all[1], g_one[1])
    assert torch.count_nonzero(g_one[0]) == 0


def test_mlp_initialisation():
    model = VAE(VAEConfig.build(family="mlp", n_features=19, latents=32, depth=4, width=64))
    assert len(model.enc.hidden) == 4 and len(model.dec.hidden) == 4
    assert torch.all(model.enc.out.bias[..., 32:] == -4.0)
    _, logvar = model.encode(torch.zeros(3, 19))
    assert logvar.shape == (1, 3, 32) and torch.allclose(logvar, torch.full_like(logvar, -4.0))
    w = model.enc.hidden[1].weight  # Kaiming normal, fan_in = 64: std sqrt(2/64)
    assert abs(w.std().item() - math.sqrt(2 / 64)) < 0.02


def test_nan_loss_stops_with_run_and_step(tmp_path):
    x = gaussian()
    with pytest.raises(NonFiniteLossError, match=r"run nan-run: non-finite .* at step \d+"):
        train(ArrayDataModule(x), {"family": "linear", "latents": 5}, T=0.1,
              settings={**QUICK, "lr": 1e30}, run_dir=tmp_path / "run", run_name="nan-run", threads=1, progress=False)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_injected_nan_stops_at_step_zero(tmp_path):
    x = gaussian()
    x[:, 0] = np.nan
    with pytest.raises(NonFiniteLossError, match=r"run injected: .* at step 0"):
        train(ArrayDataModule(x, gaussian(seed=1)), {"family": "linear", "latents": 5}, T=0.1, settings=QUICK,
              run_dir=tmp_path, run_name="injected", threads=1, progress=False)


def _train_and_measure(tmp_path: Path, seed: int):
    x, xv = gaussian(), gaussian(seed=1)
    cfg = {"family": "mlp", "depth": 2, "width": 16, "latents": 6}
    res = train(ArrayDataModule(x, xv, xv), cfg, T=0.02, settings=QUICK, seed=seed, run_dir=tmp_path,
                threads=1, progress=False)
    lat, prune, totals = measure_tables(res.model, {"test": xv}, V=res.record["V"], run_ids=["r"], model_id="mlp-d2",
                                        T=[0.02], beta=[res.record["members"][0]["beta"]], seed=seed,
                                        active_threshold=0.1)
    return res, lat, prune, totals


def test_same_seed_gives_identical_measurements(tmp_path):
    res_a, lat_a, prune_a, tot_a = _train_and_measure(tmp_path / "a", seed=3)
    res_b, lat_b, prune_b, tot_b = _train_and_measure(tmp_path / "b", seed=3)
    pd.testing.assert_frame_equal(lat_a, lat_b, check_exact=True)
    pd.testing.assert_frame_equal(prune_a, prune_b, check_exact=True)
    assert tot_a == tot_b
    _, lat_c, _, _ = _train_and_measure(tmp_path / "c", seed=4)
    assert not np.array_equal(lat_a["mu2"].to_numpy(), lat_c["mu2"].to_numpy())
    # the record has what train.json needs
    s = res_a.record
    for key in ("V", "seed", "family", "depth", "updates", "wall_time_s", "resumed_from_step", "members"):
        assert key in s
    (m,) = s["members"]
    for key in ("T", "T_grid", "beta", "sigma_dec2", "status", "updates", "m2_drift", "final"):
        assert key in m
    assert m["status"] in ("converged", "budget") and len(m["m2_drift"]) == 6
    assert (tmp_path / "a" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "a" / "logs" / "metrics.csv").is_file()


def test_model_round_trip(tmp_path):
    model = VAE(VAEConfig.build(family="mlp", n_features=5, latents=3, depth=1, width=8))
    save_trained(tmp_path / "model.pt", model, {"T": 0.1, "beta": 1.9, "V": 19.0, "seed": 0})
    loaded, meta = load_trained(tmp_path / "model.pt")
    assert meta["T"] == 0.1 and meta["hparams"]["family"] == "mlp"
    x = torch.randn(4, 5)
    assert torch.equal(model.encode(x)[0], loaded.encode(x)[0])


RESUME_SCRIPT = """
import sys, numpy as np
from spectral_collapse.datamodule import ArrayDataModule
from spectral_collapse.training import train
from spectral_collapse.provenance import write_json
rng = np.random.default_rng(0)
x = (rng.standard_normal((4000, 5)) * np.sqrt([4., 2., 1., .5, .25])).astype(np.float32)
settings = dict(lr=3e-3, batch_size=128, max_updates=int(sys.argv[2]), tolerance=1e-9, patience_fraction=0.5, eval_every=20)
res = train(ArrayDataModule(x, x[:1000]), {"family": "mlp", "depth": 2, "width": 16, "latents": 6}, T=0.02,
            settings=settings, seed=0, run_dir=sys.argv[1], threads=1, progress=False)
write_json(sys.argv[1] + "/summary.json", res.record)
import torch
torch.save(res.model.state_dict(), sys.argv[1] + "/final.pt")
"""


def test_sigkill_then_rerun_resumes_from_checkpoint(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(RESUME_SCRIPT)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(script), str(run), "800"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    step = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
            except Exception:  # noqa: BLE001 - being replaced right now
                step = 0
            if step >= 100:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "job finished before it could be killed: " + proc.stdout.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < saved < 800

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    import json

    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from_step"] >= saved > 0
    assert summary["updates"] == 800
    # the resumed run is the uninterrupted run: same batches (seeded per epoch), same noise (RNG in checkpoint)
    ref = tmp_path / "ref"
    fresh = subprocess.run([sys.executable, str(script), str(ref), "800"], env=env, capture_output=True, text=True,
                           timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    a = torch.load(run / "final.pt")
    b = torch.load(ref / "final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_restart_of_a_finished_run_and_stale_checkpoints(tmp_path, monkeypatch):
    """A finished run started again (Snakemake's --forcerun, or a code change) trains afresh: the same model,
    not resumed. An interrupted run resumes, but never across other settings or other training code."""
    import spectral_collapse.training as training

    x, xv = gaussian(), gaussian(seed=1)
    cfg = {"family": "linear", "latents": 5}
    first = train(ArrayDataModule(x, xv), cfg, T=0.05, settings=QUICK, run_dir=tmp_path, threads=1, progress=False)
    assert (tmp_path / "checkpoints" / "finished").is_file()
    again = train(ArrayDataModule(x, xv), cfg, T=0.05, settings=QUICK, run_dir=tmp_path, threads=1, progress=False)
    assert again.record["resumed_from_step"] == 0 and again.record["updates"] == first.record["updates"]
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    # interrupted after its last checkpoint (no `finished` marker): resumed
    (tmp_path / "checkpoints" / "finished").unlink()
    resumed = train(ArrayDataModule(x, xv), cfg, T=0.05, settings=QUICK, run_dir=tmp_path, threads=1, progress=False)
    assert resumed.record["resumed_from_step"] == first.record["updates"]
    # interrupted, then the training code changed: afresh
    (tmp_path / "checkpoints" / "finished").unlink()
    monkeypatch.setattr(training, "training_code_hash", lambda: "other-code")
    changed = train(ArrayDataModule(x, xv), cfg, T=0.05, settings=QUICK, run_dir=tmp_path, threads=1, progress=False)
    assert changed.record["resumed_from_step"] == 0
    monkeypatch.undo()
    (tmp_path / "checkpoints" / "finished").unlink()
    other = train(ArrayDataModule(x, xv), cfg, T=0.05, settings={**QUICK, "lr": 1e-3}, run_dir=tmp_path, threads=1,
                  progress=False)
    assert other.record["resumed_from_step"] == 0


def test_training_code_hash_covers_the_training_path():
    from spectral_collapse.codefiles import package_files
    from spectral_collapse.training import training_code_hash

    src = REPO_ROOT / "src/spectral_collapse"
    names = {p.name for p in package_files([src / "training.py", src / "group.py"])}
    assert {"vae.py", "callbacks.py", "lightning_module.py", "fused_adam.py", "datamodule.py"} <= names
    assert len(training_code_hash()) == 16


def test_training_settings_take_their_defaults_from_the_schema_only():
    """Issue 21 item 4: one frozen settings object; the optional keys' defaults are the schema's, and a missing
    required key or an unknown key is named."""
    import dataclasses

    import yaml

    from spectral_collapse.config import SCHEMA
    from spectral_collapse.settings import TrainingSettings

    six = {"batch_size": 64, "lr": 1e-3, "max_updates": 1000, "tolerance": 1e-3, "patience_fraction": 0.1,
           "eval_every": 50}
    st = TrainingSettings.from_mapping(six)
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["training"]["properties"]
    for key in ("lr_drops", "lr_drop_factor", "freeze_converged", "chain"):
        assert getattr(st, key) == schema[key]["default"], key
    assert st.patience_evals == 2 and TrainingSettings.from_mapping(st) is st
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.lr = 1.0
    with pytest.raises(ValueError, match="lack .*'eval_every'"):
        TrainingSettings.from_mapping({k: v for k, v in six.items() if k != "eval_every"})
    with pytest.raises(ValueError, match="unknown training settings \\['lr_drop'\\]"):
        TrainingSettings.from_mapping({**six, "lr_drop": 2})
