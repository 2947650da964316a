"""The equilibrium check from the collapsed side (issue 17 item 3): a point stuck at the collapsed saddle fails it,
a point at the oracle equilibrium passes; the probe is deterministic and never changes the measured model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from spectral_collapse.datamodule import ArrayDataModule
from spectral_collapse.measure import measure_split
from spectral_collapse.stability import StabilitySettings, stability_check
from spectral_collapse.vae import VAE, VAEConfig

LAM = np.array([4.0, 2.0, 1.0, 0.1])  # covariance eigenvalues (along the axes); V = 7.1
T = 0.05  # beta = T V = 0.355: modes 1-3 active (T_k = 0.56, 0.28, 0.14), mode 4 collapsed (T_k = 0.014)
STUCK = 1  # member 1: mode 2 (T_k = 0.28, 5.6 x T) held at the collapsed saddle
ACTIVE = 0.1


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: with a thread pool every op of a continuation waits on the other threads (30x
    slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gaussian_data(n: int = 4096, seed: int = 0) -> np.ndarray:
    """Rows with mean 0 and covariance exactly diag(LAM) (whitened sample), so the oracle is exact on them."""
    z = np.random.default_rng(seed).standard_normal((n, len(LAM)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T
    return (z * np.sqrt(LAM)).astype(np.float32)


def oracle_scan_point() -> VAE:
    """Two members at T: member 0 at the linear oracle's equilibrium (active mode k: encoder sqrt(lambda_k -
    beta) / lambda_k, decoder sqrt(lambda_k - beta), s_k^2 = beta / lambda_k; collapsed: zero weights, s^2 = 1),
    member 1 the same with mode STUCK collapsed although it should be active (the saddle)."""
    V = float(LAM.sum())
    beta = T * V
    model = VAE(VAEConfig.build(family="linear", n_features=4, latents=4, ensemble=2))
    active = LAM > beta
    c = np.where(active, np.sqrt(np.maximum(LAM - beta, 0)) / LAM, 0.0)
    w = np.sqrt(np.maximum(LAM - beta, 0))
    logvar = np.where(active, np.log(np.minimum(beta / LAM, 1.0)), 0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for e in range(2):
            keep = np.ones(4, dtype=bool)
            if e == 1:
                keep[STUCK] = False
            model.enc_mu.weight[e] = torch.diag(torch.tensor(c * keep, dtype=torch.float32))
            model.dec.weight[e] = torch.diag(torch.tensor(w * keep, dtype=torch.float32))
            model.enc_logvar[e, 0] = torch.tensor(np.where(keep, logvar, 0.0), dtype=torch.float32)
    return model.eval()


def run_check(model: VAE, x: np.ndarray, lr: float = 1e-2, updates: int = 300) -> list[dict]:
    data = ArrayDataModule(x, x, x, batch_size=256, V=float(LAM.sum()))
    return stability_check(
        model, data, x, None, T_grid=[T, T], beta=[T * LAM.sum()] * 2, lrs=[lr, lr], batch_size=256,
        tolerance=1e-4, active_threshold=ACTIVE, settings=StabilitySettings.from_config({"updates": updates, "scale": 0.01}), seed=0,
    )


def test_stuck_collapsed_point_fails_and_equilibrium_passes():
    x = gaussian_data()
    model = oracle_scan_point()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    m2 = measure_split(model, x, float(LAM.sum()), ACTIVE, curves=False)["M2"]
    np.testing.assert_allclose(m2[0], np.maximum(1 - T * LAM.sum() / LAM, 0), atol=2e-3)  # the oracle's M^2
    assert m2[1, STUCK] == 0 and (m2[1] <= ACTIVE).sum() == 2  # settled: nothing moves at the saddle

    good, stuck = run_check(model, x)
    assert good["passed"] and good["reactivated"] == 0 and good["n_collapsed"] == 1
    assert good["loss_change"] <= 1e-4
    assert not stuck["passed"] and stuck["n_collapsed"] == 2
    assert stuck["reactivated_latents"] == [STUCK] and stuck["loss_change"] > 1e-3
    assert good["grown"] == 0 and stuck["grown"] >= 1  # the stable collapsed mode relaxed back, the saddle did not
    # a probe: the measured model's weights are untouched
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # deterministic (seeded): the same records again
    assert run_check(model, x) == [good, stuck]


def test_scan_runs_carry_the_check_and_missing_means_not_checked(tmp_path):
    """collect: run.json's per-run `stability` becomes scan_runs' stable / stability_* columns; a run without it
    (not checked) is missing there, not False."""
    import json

    from spectral_collapse.analysis.collect import read_runs

    check = {"passed": False, "reactivated": 1, "reactivated_latents": [3], "n_collapsed": 5, "grown": 2,
             "loss_before": 2.0, "loss_after": 1.5, "loss_control": 1.9, "loss_change": 0.25, "loss_change_control": 0.05}
    runs = [{"run_id": "a", "T": 0.1, "converged": True, "totals": {"test": {"R": 1.0}}, "stability": check},
            {"run_id": "b", "T": 0.01, "converged": True, "totals": {"test": {"R": 2.0}},
             "stability": {**check, "passed": True, "reactivated": 0, "loss_change": -1e-5}}]
    (tmp_path / "checked.json").write_text(json.dumps({"seed": 0, "runs": runs}))
    (tmp_path / "old.json").write_text(json.dumps({"seed": 1, "runs": [{**runs[0], "stability": None}]}))
    table = read_runs([tmp_path / "checked.json", tmp_path / "old.json"])
    assert table["stable"].tolist()[:2] == [False, True] and table["stable"].isna().tolist() == [False, False, True]
    assert table["stability_reactivated"].tolist()[:2] == [1, 0] and table["stability_reactivated"].isna().iloc[2]
    assert table["stability_loss_change"].iloc[0] == 0.25 and table["stability_grown"].iloc[0] == 2
    table.to_parquet(tmp_path / "scan_runs.parquet")  # the nullable columns survive Parquet
    assert str(pd.read_parquet(tmp_path / "scan_runs.parquet")["stable"].dtype) == "boolean"


def test_at_a_small_final_learning_rate_the_loss_against_the_control_flags_the_saddle():
    """At lr 1e-4 (the linear family's final rate) nothing reactivates in 1,000 updates; the probe still gains
    more than the tolerance over the unperturbed continuation (the control), while the equilibrium does not."""
    good, stuck = run_check(oracle_scan_point(), gaussian_data(), lr=1e-4, updates=1000)
    assert good["passed"] and abs(good["loss_change"]) < 1e-4
    assert not stuck["passed"] and stuck["reactivated"] == 0 and stuck["loss_change"] > 1e-4
    assert stuck["grown"] >= 1


def test_relaxation_of_the_active_latents_is_not_blamed_on_the_collapsed_ones():
    """Member 0's active decoder columns 5% short of equilibrium: training on improves its loss by far more than
    the tolerance, perturbed or not. The check compares the probe with the same continuation of the unperturbed
    model, so only what the perturbation of the collapsed latents gains counts: it passes."""
    model = oracle_scan_point()
    with torch.no_grad():
        model.dec.weight[0] *= 0.95
    good, _ = run_check(model, gaussian_data(), lr=1e-3, updates=300)
    assert good["loss_change_control"] > 1e-3  # training on alone gains this much
    assert good["passed"] and good["reactivated"] == 0 and abs(good["loss_change"]) < 1e-4
