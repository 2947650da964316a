"""Held-out means are cell-area-weighted (docs/science.md section 4): the measurement of a trained group and the
validation loss, on a small synthetic store whose cell areas make the weighted and unweighted means differ."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from spectral_collapse.datamodule import ArrayDataModule
from spectral_collapse.group import measure_group_job
from spectral_collapse.lightning_module import BetaVAESystem
from spectral_collapse.store import HELDOUT_WEIGHTING, load_weights
from spectral_collapse.vae import VAE, VAEConfig, save_trained

D, L, E = 3, 2, 2
V = 3.0


def _split(rng, n, scale):
    return (rng.standard_normal((n, D)) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """train / validation / test samples and areas in the store's layout. Held-out rows with a large area lie
    far out along axis 0, so weighting changes every mean by a lot."""
    rng = np.random.default_rng(0)
    test = _split(rng, 400, [1.0, 0.7, 0.4])
    test_area = np.where(np.abs(test[:, 0]) > 1.0, 10.0, 1.0)
    validation = _split(rng, 300, [1.0, 0.7, 0.4])
    validation_area = np.where(validation[:, 1] > 0.0, 8.0, 0.5)
    path = tmp_path_factory.mktemp("store") / "tiny.zarr"
    xr.Dataset(
        {"train_x": (("train_sample", "variable"), _split(rng, 500, [1.0, 0.7, 0.4])),
         "validation_x": (("validation_sample", "variable"), validation),
         "test_x": (("test_sample", "variable"), test),
         "validation_area": (("validation_sample",), validation_area.astype(np.float32)),
         "test_area": (("test_sample",), test_area.astype(np.float32))},
        attrs={"V": V},
    ).to_zarr(path, zarr_format=2, consolidated=True)
    return path


def _model() -> VAE:
    torch.manual_seed(1)
    model = VAE(VAEConfig.build(family="linear", n_features=D, latents=L, ensemble=E))
    with torch.no_grad():
        model.enc_logvar.copy_(torch.tensor([[[-1.0, 0.5]], [[0.3, -2.0]]]))
        model.dec.bias.normal_()
    return model


def _by_hand(model: VAE, x: np.ndarray, w: np.ndarray, e: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted M_k^2 per latent and D~_K for K = 0..L (posterior means, ranked pruning), in float64."""
    C, c = model.enc_mu.weight[e].detach().double().numpy(), model.enc_mu.bias[e, 0].detach().double().numpy()
    W, b = model.dec.weight[e].detach().double().numpy(), model.dec.bias[e, 0].detach().double().numpy()
    s2 = np.exp(model.enc_logvar[e, 0].detach().double().numpy())
    p = w / w.sum()
    mu = x.astype(np.float64) @ C + c
    mu2 = p @ mu**2
    M2 = mu2 / (mu2 + s2)
    order = np.argsort(-M2, kind="stable")
    D_K = [p @ ((x - (mu * np.isin(np.arange(L), order[:K])) @ W - b) ** 2).sum(1) / V for K in range(L + 1)]
    return M2, np.array(D_K)


def test_measurement_of_a_group_is_area_weighted(store, tmp_path):
    model = _model()
    save_trained(tmp_path / "model.pt", model, {"T": [0.1, 0.2]})
    record = {"V": V, "seed": 0, "model": "linear", "run_ids": ["a", "b"],
              "members": [{"T": T, "beta": T * V, "status": "converged", "m2_drift": [0.0] * L} for T in (0.1, 0.2)]}
    (tmp_path / "train.json").write_text(json.dumps(record))
    out = {name: tmp_path / f"{name}.parquet" for name in ("latents", "pruning")}
    measure_group_job(store, tmp_path / "model.pt", tmp_path / "train.json", latents_path=out["latents"],
                      pruning_path=out["pruning"], run_path=tmp_path / "run.json", splits=["test"],
                      active_threshold=0.1)
    lat, prn = pd.read_parquet(out["latents"]), pd.read_parquet(out["pruning"])
    x = xr.open_zarr(store)["test_x"].values
    w = load_weights(store, "test")
    for e, run_id in enumerate(("a", "b")):
        M2, D_K = _by_hand(model, x, w, e)
        got = lat[lat.run_id == run_id].sort_values("latent")["M2"].to_numpy()
        np.testing.assert_allclose(got, M2, rtol=1e-5)
        np.testing.assert_allclose(prn[prn.run_id == run_id].sort_values("K")["D_tilde"], D_K, rtol=1e-5)
        M2_flat, D_flat = _by_hand(model, x, np.ones_like(w), e)
        assert np.abs(got - M2_flat).max() > 0.01 and np.abs(D_K - D_flat).max() > 0.01  # the weights matter
    assert json.loads((tmp_path / "run.json").read_text())["heldout_weighting"] == HELDOUT_WEIGHTING


def test_validation_loss_is_the_area_weighted_mean(store):
    """The system's validation loss (which decides convergence) is the weighted mean of the per-cell loss."""
    ds = xr.open_zarr(store)
    xv = ds["validation_x"].values
    w = load_weights(store, "validation")
    data = ArrayDataModule.from_store(store)
    model = _model()
    system = BetaVAESystem(model, [0.1, 0.2], V=V, lr=1e-3)
    system.on_validation_epoch_start()
    for i, batch in enumerate(data.val_dataloader()):
        system.validation_step(batch, i)
    acc = system._val
    got = (acc["loss"] / acc["w"]).numpy()
    noise = system.validation_noise(torch.as_tensor(xv), 0).double()
    x = torch.as_tensor(xv).double()
    with torch.no_grad():
        mu, logvar = model.double().encode(x)
        z = mu + torch.exp(0.5 * logvar) * noise
        per_cell = (model.decode(z) - x).pow(2).sum(-1) / 2 + torch.tensor([[0.1 * V], [0.2 * V]], dtype=torch.double) \
            * (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).sum(-1)
    p = torch.as_tensor(w / w.sum())
    np.testing.assert_allclose(got, (per_cell * p).sum(-1).numpy(), rtol=1e-5)
    assert np.abs(got - per_cell.mean(-1).numpy()).max() > 1e-3  # the weights matter
