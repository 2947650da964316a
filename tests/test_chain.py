"""The warm-start chain (issue 19): points trained hottest first, each from the previous point's weights.

Checked on a linear model of a known spectrum (lambda = 25, 16, 9, 4, 1; sigma_dec^2 = 1), where the exact
oracle gives M_k^2 = [1 - beta / lambda_k]_+: every chain member lands within issue 3's band of the oracle
(0.02 for modes away from their threshold, collapsed modes below 0.01), so starting from the hotter neighbour
does not move the equilibrium; each point starts from its neighbour's weights (the fingerprint and the record
say so); the stacked model.pt is the members' own weights; an interrupted chain reuses its finished points and
a rerun of a finished chain trains afresh; the collapsed start of the latents (mean_init_scale) builds what it
says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectral_collapse import chain as chain_mod
from spectral_collapse.callbacks import FINISHED
from spectral_collapse.datamodule import ArrayDataModule
from spectral_collapse.group import train_group
from spectral_collapse.measure import measure_split
from spectral_collapse.vae import VAE, VAEConfig, latent_parameters, stack_members

LAMBDA = np.array([25.0, 16.0, 9.0, 4.0, 1.0])
BETAS = [10.0, 5.0, 2.0]  # a chain runs hottest first: beta 10 (rank 1-2 active), 5 (1-3), 2 (1-4)
TRAINING = {"lr": 1.0e-2, "batch_size": 1024, "max_updates": 4000, "tolerance": 1.0e-4,
            "patience_fraction": 0.15, "eval_every": 200, "lr_drops": 1, "chain": True}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    sample = lambda n: (rng.standard_normal((n, len(LAMBDA))) * np.sqrt(LAMBDA)).astype(np.float32)  # noqa: E731
    dm = ArrayDataModule(sample(20_000), sample(10_000), sample(10_000))
    lam_hat = np.sort(np.linalg.eigvalsh(np.cov(dm.train_tensor.numpy().T.astype(np.float64), bias=True)))[::-1]
    return dm, lam_hat


def _assert_members_on_the_oracle(model, dm, lam):
    """Member e (beta = BETAS[e]) within issue 3's band of M_k^2 = [1 - beta / lambda_k]_+: 0.02 for modes away from
    their threshold, collapsed modes below 0.01."""
    m2 = -np.sort(-measure_split(model, dm.train_tensor.numpy(), dm.V, 0.1)["M2"], axis=1)
    for e, beta in enumerate(BETAS):
        oracle = np.clip(1.0 - beta / lam, 0.0, None)
        away, collapsed = lam > 1.5 * beta, lam < beta
        assert np.all(np.abs(m2[e, away] - oracle[away]) < 0.02), (beta, m2[e], oracle)
        assert np.all(m2[e, collapsed] < 0.01), (beta, m2[e])


def _settings(**training):
    return {"family": "linear", "depth": 0, "model": {"latents": 5}, "decoder": {"variance": "fixed", "sigma2": 1.0},
            "training": {**TRAINING, **training}}


def test_chain_members_match_the_oracle_and_start_from_their_neighbour(data, tmp_path):
    dm, lam = data
    Ts = [b / dm.V for b in BETAS]
    group = train_group(dm, _settings(), Ts, model_id="linear", seed=0, run_dir=tmp_path)
    record = group.record
    labels = ["T" + chain_mod.t_label(T) for T in Ts]
    assert [c["init"] for c in record["chain"]] == ["initialisation", labels[0], labels[1]]
    assert record["updates"] == sum(c["updates"] for c in record["chain"]) == record["point_updates"]
    assert [m["T_grid"] for m in record["members"]] == Ts
    assert all(m["status"] == "converged" for m in record["members"]), [m["status"] for m in record["members"]]
    _assert_members_on_the_oracle(group.model, dm, lam)
    # The stacked model holds each point's own weights: member e of model.pt is the chain's point e.
    for e, T in enumerate(Ts):
        saved = torch.load(tmp_path / "checkpoints" / f"T{chain_mod.t_label(T)}" / chain_mod.POINT_FILE,
                           weights_only=False)
        for name, value in saved["state_dict"].items():
            torch.testing.assert_close(group.model.state_dict()[name][e : e + 1], value)


def test_chain_starts_each_point_from_the_previous_weights(data, tmp_path, monkeypatch):
    dm, _ = data
    seen = []
    import spectral_collapse.training as training  # train_chain imports train from it when it runs

    original = training.train

    def spy(*args, init_state=None, init_key=None, **kwargs):
        seen.append((None if init_state is None else {k: v.clone() for k, v in init_state.items()}, init_key))
        result = original(*args, init_state=init_state, init_key=init_key, **kwargs)
        seen[-1] = seen[-1] + ({k: v.clone() for k, v in result.model.state_dict().items()},)
        return result

    monkeypatch.setattr(training, "train", spy)
    Ts = [b / dm.V for b in BETAS]
    train_group(dm, _settings(max_updates=400, patience_fraction=0.5, lr_drops=0), Ts, model_id="linear", seed=0,
                run_dir=tmp_path)
    assert seen[0][0] is None and seen[0][1] is None
    for k in (1, 2):
        start, key, _ = seen[k]
        assert key is not None and key != seen[k - 1][1]
        for name, value in seen[k - 1][2].items():  # the previous point's final weights
            torch.testing.assert_close(start[name], value)


def test_interrupted_chain_reuses_finished_points_and_a_rerun_trains_afresh(data, tmp_path, capsys):
    dm, _ = data
    Ts = [b / dm.V for b in BETAS]
    settings = _settings(max_updates=400, patience_fraction=0.5, lr_drops=0)
    first = train_group(dm, settings, Ts, model_id="linear", seed=0, run_dir=tmp_path)
    ckpt = tmp_path / "checkpoints"
    # Interrupted after its second point: the job's marker and the last point are gone.
    (ckpt / FINISHED).unlink()
    (ckpt / f"T{chain_mod.t_label(Ts[2])}" / chain_mod.POINT_FILE).unlink()
    capsys.readouterr()
    resumed = train_group(dm, settings, Ts, model_id="linear", seed=0, run_dir=tmp_path)
    assert [c["reused"] for c in resumed.record["chain"]] == [True, True, False]
    assert "reused the finished point" in capsys.readouterr().out
    for name, value in first.model.state_dict().items():  # deterministic: the same chain, bit for bit
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)
    # A rerun of the finished chain (forced, or new code) trains every point again.
    again = train_group(dm, settings, Ts, model_id="linear", seed=0, run_dir=tmp_path)
    assert [c["reused"] for c in again.record["chain"]] == [False, False, False]
    # Other settings: a finished point of another chain is never reused.
    (ckpt / FINISHED).unlink()
    other = train_group(dm, _settings(max_updates=400, patience_fraction=0.5, lr_drops=0, lr=5e-3), Ts,
                        model_id="linear", seed=0, run_dir=tmp_path)
    assert not any(c["reused"] for c in other.record["chain"])


def test_stack_members_and_collapsed_start():
    models = [VAE(VAEConfig.build(family="mlp", depth=1, latents=3, width=4, n_features=2)) for _ in range(2)]
    stacked = stack_members(models)
    assert stacked.ensemble == 2
    for e, m in enumerate(models):
        for name, value in m.state_dict().items():
            torch.testing.assert_close(stacked.state_dict()[name][e : e + 1], value)
    with pytest.raises(ValueError, match="different architectures"):
        stack_members([models[0], VAE(VAEConfig.build(family="mlp", depth=2, latents=3, width=4, n_features=2))])
    torch.manual_seed(0)
    paper = VAE(VAEConfig.build(family="mlp", depth=1, latents=3, width=8, n_features=2))
    torch.manual_seed(0)
    collapsed = VAE(VAEConfig.build(family="mlp", depth=1, latents=3, width=8, n_features=2, logvar_bias_init=0.0,
                              mean_init_scale=0.01))
    torch.testing.assert_close(collapsed.enc.out.weight[..., :3], 0.01 * paper.enc.out.weight[..., :3])
    torch.testing.assert_close(collapsed.enc.out.weight[..., 3:], paper.enc.out.weight[..., 3:])
    assert torch.all(collapsed.enc.out.bias[..., 3:] == 0.0) and torch.all(paper.enc.out.bias[..., 3:] == -4.0)
    torch.manual_seed(0)
    lin = VAE(VAEConfig.build(family="linear", latents=3, n_features=2, mean_init_scale=0.5, logvar_bias_init=0.0))
    torch.manual_seed(0)
    lin_paper = VAE(VAEConfig.build(family="linear", latents=3, n_features=2))
    torch.testing.assert_close(lin.enc_mu.weight, 0.5 * lin_paper.enc_mu.weight)
    with pytest.raises(ValueError, match="mean_init_scale"):
        VAEConfig.build("linear", 2, mean_init_scale=0.0)


def test_a_diverging_point_restarts_at_a_lower_learning_rate(data, tmp_path):
    """A chain point whose loss goes non-finite (here: lr 1e4) restarts from its starting weights with its first
    learning-rate drop taken early, and the chain goes on; the record lists the restart. Without a drop left the
    error stands (nothing is hidden)."""
    from spectral_collapse.lightning_module import NonFiniteLossError

    dm, _ = data
    Ts = [b / dm.V for b in BETAS[:2]]  # a chain of two points: the first diverges, the second starts from it
    group = train_group(dm, _settings(lr=1.0e4, lr_drop_factor=1.0e-6, max_updates=400), Ts, model_id="linear",
                        seed=0, run_dir=tmp_path / "restarted")
    assert [point["lr_restarts"] for point in group.record["chain"]][0] == 1
    first = "T" + chain_mod.t_label(Ts[0])
    saved = torch.load(next((tmp_path / "restarted").rglob(f"{first}/{chain_mod.POINT_FILE}")), weights_only=False)
    [restart] = saved["record"]["lr_restarts"]
    assert restart["lr"] == 1.0e4 and "non-finite training loss" in restart["error"]
    assert all(np.isfinite(p.detach().numpy()).all() for p in group.model.parameters())
    with pytest.raises(NonFiniteLossError):
        train_group(dm, _settings(lr=1.0e4, lr_drops=0, max_updates=400), Ts, model_id="linear", seed=0,
                    run_dir=tmp_path / "no_drop_left")


@pytest.mark.parametrize("family", ["linear", "mlp"])
def test_reopen_gives_collapsed_latents_an_open_encoder_and_keeps_active_ones(data, family):
    """training.chain_reopen: the latents whose validation M^2 is at most the threshold get exactly the encoder
    weights a point trained from scratch starts from (the seed's initialisation) and zero decoder weights; every
    other weight is the warm state's."""
    dm, _ = data
    cfg = VAEConfig.build(family, dm.n_features, depth=2 if family == "mlp" else 0, latents=4, width=8)
    torch.manual_seed(11)
    warm = VAE(cfg)
    with torch.no_grad():  # latents 1 and 3 shut: no mean from the encoder, no weight into the decoder
        encoder, decoder = latent_parameters(warm)
        for param, axis, offset in encoder[:2] + decoder:
            for k in (1, 3):
                param.select(axis, offset + k).zero_()
    state = {name: v.clone() for name, v in warm.state_dict().items()}
    reopened_state, reopened = chain_mod.reopen_collapsed(state, cfg, dm, seed=5, threshold=0.1)
    assert reopened == [1, 3]
    torch.manual_seed(5)
    fresh = VAE(cfg)
    back = VAE(cfg)
    back.load_state_dict(reopened_state)
    (enc_back, dec_back), (enc_fresh, _), (enc_warm, dec_warm) = (
        latent_parameters(m) for m in (back, fresh, warm))
    for (param, axis, offset), (init, _, _), (old, _, _) in zip(enc_back, enc_fresh, enc_warm):
        for k in range(4):
            torch.testing.assert_close(param.select(axis, offset + k), (init if k in (1, 3) else old).select(axis, offset + k))
    for (param, axis, offset), (old, _, _) in zip(dec_back, dec_warm):
        for k in range(4):
            want = torch.zeros_like(old.select(axis, k)) if k in (1, 3) else old.select(axis, k)
            torch.testing.assert_close(param.select(axis, offset + k), want)
    # Weights shared by all latents (the trunks, the decoder's other layers, the biases) stay warm.
    own = {id(p) for p, _, _ in enc_back + dec_back}
    for (name, param), (_, old) in zip(back.named_parameters(), warm.named_parameters()):
        if id(param) not in own:
            torch.testing.assert_close(param, old, msg=name)
    assert sum(id(p) not in own for p in back.parameters()) >= (1 if family == "linear" else 4)
    # Every latent shut: nothing fitted to keep, the point starts from the seed's initialisation, whole.
    with torch.no_grad():
        for param, axis, offset in encoder[:2] + decoder:
            param.zero_()
    whole, reopened = chain_mod.reopen_collapsed({n: v.clone() for n, v in warm.state_dict().items()}, cfg, dm,
                                                 seed=5, threshold=0.1)
    assert reopened == [0, 1, 2, 3]
    for name, value in fresh.state_dict().items():
        torch.testing.assert_close(whole[name], value, msg=name)


@pytest.mark.parametrize("family", ["linear", "mlp"])
def test_fresh_encoder_takes_the_whole_encoder_from_the_initialisation_and_keeps_the_decoder(data, family):
    """chain_reopen: encoder: every encoder weight (an MLP's shared layers too) is the seed's initialisation, every
    other weight (the decoder, as the reopening left it) is the given state's; a state of another architecture
    stops with the names of both."""
    dm, _ = data
    cfg = VAEConfig.build(family, dm.n_features, depth=2 if family == "mlp" else 0, latents=4, width=8)
    torch.manual_seed(11)
    warm = {name: v + 0.5 for name, v in VAE(cfg).state_dict().items()}  # trained: no weight at its initial value
    out = chain_mod.fresh_encoder(warm, cfg, seed=5)
    torch.manual_seed(5)
    fresh = VAE(cfg).state_dict()
    encoder = [name for name in fresh if name.startswith("enc")]
    assert len(encoder) >= (2 if family == "linear" else 6), encoder
    for name, value in out.items():
        torch.testing.assert_close(value, fresh[name] if name in encoder else warm[name], msg=name)
        if name in encoder:
            assert not torch.equal(value, warm[name]), name  # the check above could not pass by accident
    other = VAEConfig.build(family, dm.n_features, depth=2 if family == "mlp" else 0, latents=3, width=8)
    with pytest.raises(ValueError, match="fresh_encoder"):
        chain_mod.fresh_encoder({"x": torch.zeros(1)}, other, seed=5)


def test_chain_reopen_takes_a_bool_or_encoder_and_names_the_key_otherwise():
    from spectral_collapse.settings import TrainingSettings

    assert TrainingSettings.from_mapping({**TRAINING, "chain_reopen": "encoder"}).fresh_encoder
    assert not TrainingSettings.from_mapping({**TRAINING, "chain_reopen": True}).fresh_encoder
    # An old run's settings (a bool) keep their dict, so their point keys and config hashes do not move.
    assert TrainingSettings.from_mapping({**TRAINING, "chain_reopen": True}).as_dict()["chain_reopen"] is True
    with pytest.raises(ValueError, match="training.chain_reopen"):
        TrainingSettings.from_mapping({**TRAINING, "chain_reopen": "decoder"})


@pytest.mark.parametrize("reopen", [True, "encoder"])
def test_reopening_chain_records_what_it_reopened_and_matches_the_oracle(data, tmp_path, reopen):
    """With chain_reopen (true, or encoder: the whole encoder fresh too) the chain's points still land on the exact
    oracle (issue 3's band), and the record says which latents each point reopened (the first point none: it
    starts from the initialisation)."""
    dm, lam = data
    Ts = [b / dm.V for b in BETAS]
    group = train_group(dm, {**_settings(chain_reopen=reopen), "reopen_threshold": 0.1}, Ts, model_id="linear",
                        seed=0, run_dir=tmp_path)
    chain = group.record["chain"]
    assert chain[0]["reopened"] == []
    assert all(len(c["reopened"]) >= 1 for c in chain[1:]), chain  # beta 10 and 5 leave latents shut
    assert all(m["status"] == "converged" for m in group.record["members"])
    _assert_members_on_the_oracle(group.model, dm, lam)


def test_reopening_takes_its_threshold_from_the_analysis_and_refuses_to_guess(data, tmp_path, monkeypatch):
    """The latents a chain reopens are those at or below analysis.active_threshold (scan.model_settings passes it,
    and only to a reopening chain: other jobs' settings are unchanged); a reopening chain without it stops."""
    from spectral_collapse.config import load_config
    from spectral_collapse.scan import model_settings

    config = load_config()
    assert "reopen_threshold" not in model_settings(config, "linear")
    config["training"]["chain_reopen"] = True
    config["analysis"]["active_threshold"] = 0.2
    assert model_settings(config, "mlp-d2")["reopen_threshold"] == 0.2
    dm, _ = data
    with pytest.raises(ValueError, match="reopen_threshold"):
        train_group(dm, _settings(chain_reopen=True), [b / dm.V for b in BETAS], model_id="linear", seed=0,
                    run_dir=tmp_path)
    # The threshold reaches the reopening and the point key: another threshold, another key (a retraining).
    from spectral_collapse.settings import TrainingSettings

    st = TrainingSettings.from_mapping({**TRAINING, "chain_reopen": True})
    cfg = VAEConfig.build("linear", dm.n_features, latents=5)
    keys = {chain_mod.point_key(cfg, [1.0, 0.5], dm.V, 0, st, t) for t in (0.1, 0.2)}
    assert len(keys) == 2
    seen = []
    real = chain_mod.reopen_collapsed

    def spy(state, single, data, seed, threshold):
        seen.append(threshold)
        return real(state, single, data, seed, threshold)

    monkeypatch.setattr(chain_mod, "reopen_collapsed", spy)
    train_group(dm, {**_settings(chain_reopen=True, max_updates=400), "reopen_threshold": 0.37},
                [b / dm.V for b in BETAS[:2]], model_id="linear", seed=0, run_dir=tmp_path / "spy")
    assert seen == [0.37]
    # Every latent at or below a threshold above 1 reopens; none below 0.
    state = {name: v.clone() for name, v in VAE(cfg).state_dict().items()}
    assert chain_mod.reopen_collapsed(state, cfg, dm, 0, 1.1)[1] == list(range(5))
    assert chain_mod.reopen_collapsed(state, cfg, dm, 0, -0.1)[1] == []


def test_chain_from_the_cold_side_starts_coldest_and_matches_the_oracle(data, tmp_path):
    """training.chain_from: cold: the coldest point starts from the initialisation, every hotter point from its
    colder neighbour, and the members still land on the exact oracle (latents collapse along the chain)."""
    dm, lam = data
    # Hottest first in the list; the chain runs the other way. Its first point, from the initialisation at the
    # coldest T, needs ~10,000 updates for its four open latents to align (the hot-side chain's first has two).
    Ts = [b / dm.V for b in BETAS]
    group = train_group(dm, _settings(chain_from="cold", max_updates=12000), Ts, model_id="linear", seed=0, run_dir=tmp_path)
    labels = ["T" + chain_mod.t_label(T) for T in Ts]
    assert [c["init"] for c in group.record["chain"]] == [labels[1], labels[2], "initialisation"]
    assert all(m["status"] == "converged" for m in group.record["members"])
    _assert_members_on_the_oracle(group.model, dm, lam)
