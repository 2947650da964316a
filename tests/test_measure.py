"""Measurements: per-latent table and ranked-pruning curve checked by hand; the rule scripts end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from spectral_collapse import measure as measure_module
from spectral_collapse.measure import measure_split, measure_tables
from spectral_collapse.vae import VAE, VAEConfig

MEASURED_SPLITS = ("test", "validation", "train")  # the config's default models.<family>.measured_splits
REPO_ROOT = Path(__file__).resolve().parents[1]
LATENT_COLUMNS = ["run_id", "model", "family", "depth", "T", "beta", "V", "seed", "split", "latent", "rank", "mu2",
                  "s2", "logs2", "rate", "M2", "snr", "active", "m2_drift", "converged", "w2",
                  "ablation_dD"]
PRUNING_COLUMNS = ["run_id", "model", "family", "depth", "T", "beta", "seed", "split", "K", "D_tilde"]


def linear_model(E: int = 2, d: int = 4, L: int = 3, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    model = VAE(VAEConfig.build(family="linear", n_features=d, latents=L, ensemble=E))
    with torch.no_grad():
        model.enc_logvar.copy_(torch.randn(E, 1, L))
        model.dec.bias.copy_(torch.randn(E, 1, d))
    return model


def test_measurements_by_hand():
    model = linear_model()
    with torch.no_grad():
        model.enc_mu.weight[1, :, 2] = 0.0  # member 1's latent 2 collapsed (M^2 = 0): no ablation computed
    x = np.random.default_rng(0).standard_normal((1000, 4)).astype(np.float32) * [3, 2, 1, 0.5]
    V = float(x.var(0).sum())
    m = measure_split(model, x, V, 0.1)
    for e in range(2):
        C, c = model.enc_mu.weight[e].detach().double().numpy(), model.enc_mu.bias[e, 0].detach().double().numpy()
        W, b = model.dec.weight[e].detach().double().numpy(), model.dec.bias[e, 0].detach().double().numpy()
        logvar = model.enc_logvar[e, 0].detach().double().numpy()
        mu = x.astype(np.float64) @ C + c
        mu2, s2 = (mu**2).mean(0), np.exp(logvar)
        M2 = mu2 / (mu2 + s2)
        assert np.allclose(m["mu2"][e], mu2, rtol=1e-5)
        assert np.allclose(m["s2"][e], s2, rtol=1e-5)
        assert np.allclose(m["logs2"][e], logvar, rtol=1e-5)
        assert np.allclose(m["M2"][e], M2, rtol=1e-5)
        assert np.allclose(m["snr"][e], mu2 / s2, rtol=1e-5)
        assert np.allclose(m["rate"][e], 0.5 * (mu2 + s2 - logvar - 1), rtol=1e-5, atol=1e-7)
        assert np.allclose(m["R"][e], m["rate"][e].sum())
        order = np.argsort(-M2)
        assert list(m["rank"][e][order]) == [1, 2, 3]
        assert np.array_equal(m["active"][e], M2 > 0.1)
        for K in range(4):
            keep = np.isin(np.arange(3), order[:K])
            x_hat = (mu * keep) @ W + b
            assert m["D_tilde_K"][e, K] == pytest.approx(((x - x_hat) ** 2).sum(1).mean() / V, rel=1e-5)
        full = ((x - (mu @ W + b)) ** 2).sum(1).mean() / V
        for k in range(3):  # active latent k alone set to 0, every other latent kept, minus every latent kept
            ablated = ((x - ((mu * (np.arange(3) != k)) @ W + b)) ** 2).sum(1).mean() / V
            if M2[k] > 0.1:
                assert m["ablation_dD"][e, k] == pytest.approx(ablated - full, rel=1e-4, abs=1e-7)
            else:  # not computed for a collapsed latent
                assert np.isnan(m["ablation_dD"][e, k])
        assert np.allclose(m["w2"][e], (W**2).sum(1), rtol=1e-6)
        # sampled distortion: E||x - W(mu + s eps) - b||^2 = ||x - W mu - b||^2 + sum_k s_k^2 ||w_k||^2
        expected = m["D_tilde_K"][e, 3] * V + (s2 * (W**2).sum(1)).sum()
        assert m["D"][e] == pytest.approx(expected / 2, rel=0.05)
        assert m["D_tilde_sampled"][e] == pytest.approx(2 * m["D"][e] / V, rel=1e-9)


def _reference_measurements(model: VAE, x: np.ndarray, V: float, chunk: int) -> dict[str, np.ndarray]:
    """The definitions, computed plainly: one chunk of rows at a time (the sampling noise drawn per chunk
    from the fixed generator), then one decode of the whole split per pruning level K."""
    E, L = model.ensemble, model.config.latents
    xt = torch.as_tensor(x)
    gen = torch.Generator().manual_seed(measure_module.NOISE_SEED)
    with torch.no_grad():
        mu, logvar = model.encode(xt)
        noise = torch.cat([torch.randn((E, len(xt[s : s + chunk]), L), generator=gen) for s in range(0, len(xt), chunk)], 1)
        sq = (model.decode(mu + logvar.exp().sqrt() * noise) - xt).double().pow(2).sum(-1).mean(-1)
        mu2, s2 = mu.double().pow(2).mean(1), logvar.exp().double().mean(1)
        rank = torch.argsort(torch.argsort(-(mu2 / (mu2 + s2)), dim=1, stable=True), dim=1) + 1
        pruned = [(model.decode(mu * (rank <= K).float()[:, None, :]) - xt).double().pow(2).sum(-1).mean(-1)
                  for K in range(L + 1)]
        ablated = [(model.decode(mu * (torch.arange(L) != k).float()) - xt).double().pow(2).sum(-1).mean(-1)
                   for k in range(L)]
    D_K = torch.stack(pruned, 1) / V
    return {"mu2": mu2.numpy(), "s2": s2.numpy(), "rank": rank.numpy(), "D": (sq / (2 * model.sigma2.double())).numpy(),
            "D_tilde_K": D_K.numpy(),
            "ablation_dD": np.where((mu2 / (mu2 + s2)).numpy() > 0.1, (torch.stack(ablated, 1) / V - D_K[:, -1:]).numpy(), np.nan)}


def test_blocked_measurement_is_the_plain_computation(monkeypatch):
    """measure_split works in cache-sized blocks (blocks that straddle the noise chunks, pruning levels decoded
    together): the results are those of the plain computation, and do not depend on the block sizes."""
    torch.manual_seed(3)
    model = VAE(VAEConfig.build(family="mlp", n_features=5, latents=4, depth=2, width=8, ensemble=3)).eval()
    with torch.no_grad():  # collapse some latents (huge variance): 3, 4 and 2 active latents, ablations padded
        model.enc.out.bias[0, 0, 4 + 1] = 8.0
        model.enc.out.bias[2, 0, 4 + 0] = model.enc.out.bias[2, 0, 4 + 3] = 8.0
    x = np.random.default_rng(2).standard_normal((1000, 5)).astype(np.float32)
    monkeypatch.setattr(measure_module, "NOISE_ROWS", 300)
    ref = _reference_measurements(model, x, 5.0, chunk=300)
    for block_rows, min_rows in ((100, 7), (10_000, 1)):  # 33-row blocks (300 = 9 x 33 + 3), or whole chunks
        monkeypatch.setattr(measure_module, "BLOCK_ROWS", block_rows)
        monkeypatch.setattr(measure_module, "MIN_BLOCK_ROWS", min_rows)
        monkeypatch.setattr(measure_module, "MIN_PRUNE_ROWS", min_rows)
        m = measure_split(model, x, 5.0, 0.1)
        for key, expected in ref.items():
            assert np.allclose(m[key], expected, rtol=1e-5, atol=1e-7, equal_nan=True), (block_rows, key)


def test_float64_model_is_measured_in_float64():
    model = linear_model().double()
    x = torch.as_tensor(np.random.default_rng(4).standard_normal((300, 4)))
    m = measure_split(model, x, 4.0, 0.1)
    mu = model.encode(x)[0].detach()
    assert np.allclose(m["mu2"], mu.pow(2).mean(1).numpy(), rtol=1e-12)


def test_tables_schema_and_identifiers():
    model = linear_model()
    x = np.random.default_rng(1).standard_normal((500, 4)).astype(np.float32)
    lat, prune, totals = measure_tables(
        model, {"test": x, "validation": x[:200]}, V=4.0, run_ids=["a", "b"], model_id="linear", T=[0.1, 0.2],
        beta=[0.4, 0.8], seed=0, m2_drift=np.zeros((2, 3)), converged=[True, False], active_threshold=0.1,
    )
    assert list(lat.columns) == LATENT_COLUMNS
    assert list(prune.columns) == PRUNING_COLUMNS
    assert len(lat) == 2 * 2 * 3 and len(prune) == 2 * 2 * 4
    assert set(lat["split"]) == {"test", "validation"}
    for (run, split), g in lat.groupby(["run_id", "split"]):
        assert sorted(g["rank"]) == [1, 2, 3]
    assert lat.loc[lat.run_id == "b", "converged"].eq(False).all()
    assert totals[1]["test"]["loss"] == pytest.approx(totals[1]["test"]["D"] + 0.8 * totals[1]["test"]["R"])
    assert totals[0]["validation"]["n"] == 200


@pytest.mark.slow
def test_train_and_measure_rules_end_to_end(tmp_path, worldclim_dir):
    """scripts/train_run.py and scripts/measure_run.py through Snakemake on the real rasters (small store)."""
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    config["data"]["worldclim_dir"] = str(worldclim_dir)
    config["store"]["n_train"] = 20000
    config["scan"]["families"] = ["linear"]
    # a grid value its 5-digit label (5.6234e-01) only names; models.linear.T is the linear family's own grid
    config["models"]["linear"]["T"] = {"values": [10 ** -0.25]}
    config["models"]["linear"]["training"] = {"lr": 1e-2, "batch_size": 1024, "max_updates": 400}
    config["training"].update({"eval_every": 100, "patience_fraction": 0.5})
    config.setdefault("analysis", {})["stability_check"] = {"updates": 50}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/runs/linear/T5.6234e-01/seed0/run.json"  # a group of one scan point
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO_ROOT / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(cfg), "-c2", target]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    run_dir = tmp_path / "results/runs/linear/T5.6234e-01/seed0"
    payload = json.loads((run_dir / "run.json").read_text())
    (run,) = payload["runs"]
    # trained at the exact grid value, not at the label's 0.56234 (issue 10: one T per scan point)
    assert run["T"] == run["T_grid"] == 10 ** -0.25 and run["beta"] == pytest.approx(10 ** -0.25 * payload["V"])
    assert run["updates"] <= 400 and run["status"] in ("converged", "budget")
    assert set(run["totals"]) == set(MEASURED_SPLITS) == {"test", "validation", "train"}
    assert len(payload["data_checksums"]) == 19
    # the stability probe ran in the measure rule with the config's settings, and its line is in the log
    assert payload["stability_check"]["updates"] == 50 and run["stability"]["updates"] == 50
    assert "stability check (50 updates" in (tmp_path / "results/logs/measure/linear/T5.6234e-01/seed0.log").read_text()
    lat = pd.read_parquet(run_dir / "latents.parquet")
    assert list(lat.columns) == LATENT_COLUMNS and len(lat) == 3 * 19
    prune = pd.read_parquet(run_dir / "pruning.parquet")
    assert list(prune.columns) == PRUNING_COLUMNS and len(prune) == 3 * 20
    assert (run_dir / "checkpoints/last.ckpt").is_file() and (run_dir / "logs/metrics.csv").is_file()
    log = (tmp_path / "results/logs/train/linear/T5.6234e-01/seed0.log").read_text()
    assert "step 100/400" in log  # one line per evaluation when not on a terminal
    # the progress line goes to the terminal of whoever started snakemake (here its captured stderr), not the log
    shown = proc.stdout + proc.stderr
    assert "[train linear/" in shown and "updates 0/400" in shown and "training finished" in shown
    assert "training finished" not in log
    from spectral_collapse.vae import encode_array, load_trained

    model, meta = load_trained(run_dir / "model.pt")
    assert meta["T"] == [10 ** -0.25] and meta["run_id"] == ["linear/T5.6234e-01/seed0"]
    assert set(lat["T"]) == {10 ** -0.25}
    from spectral_collapse.store import load_split, load_weights

    from spectral_collapse.storepath import store_paths

    store = tmp_path / store_paths(config["store"], tmp_path).store  # each store's settings have their own folder
    mu, logvar = encode_array(model, load_split(store, "test"))
    w = load_weights(store, "test")[:, None]  # the test split is every cell of its blocks: area-weighted means
    mu2, s2 = (w * mu**2).sum(0) / w.sum(), (w * np.exp(logvar)).sum(0) / w.sum()
    M2 = mu2 / (mu2 + s2)
    test = lat[lat.split == "test"].sort_values("latent")
    assert np.allclose(M2, test["M2"], rtol=1e-4, atol=1e-6)
