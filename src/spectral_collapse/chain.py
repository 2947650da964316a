"""The warm-start chain (issue 19): a job's scan points trained one after another, hottest first, each point
starting from the final weights of the point before it (the first from the initialisation).

Why: at small beta a start from the initialisation (every latent active, log-variance -4) has to relax the
whole model, and at the cold end that takes up to the update budget. The neighbouring hotter point has already
fitted the decoder and encoder, and its unused latents are collapsed: the colder point only has to open the
latents whose threshold lies between the two temperatures and refine. Every point still passes the project's
own convergence rule with its annealing (``training.train``), and the measure job's stability check perturbs its
collapsed latents from the other side, so a latent that stayed collapsed only because the chain came from the
hot side fails the check instead of passing silently.

From the cold side (``training.chain_from: cold``): the coldest point first, from the initialisation, then each
hotter point from its colder neighbour. Latents then collapse along the chain instead of opening, so a latent
held open that should be shut, or shut that should be open, shows as a disagreement with the chain from the hot
side or with independent starts: the other side of the equilibrium check (issue 19).

Reopening (``training.chain_reopen``): before each point after the first, the latents its hotter neighbour left
collapsed (all of them: the whole model from the initialisation, see ``reopen_collapsed``) (validation M^2 <= ``analysis.active_threshold``, passed as ``reopen_threshold``) are reopened (``reopen_collapsed``: the weights of those latents
alone), the active latents and the shared layers keep the neighbour's. Why: a fully collapsed latent is a stationary point of the loss, and the
plain chain opened a latent only as fast as it escaped that saddle, so it held latents shut that the exact
linear oracle has open (11 of 29 linear points, reference/chain_rerun/). Reopened, every latent a point leaves
collapsed has collapsed from the open side during that point's own training, as from a random start, while the
latents the hotter point needed start fitted. A reopened latent's decoder weights start at zero (the encoder's at
the initialisation): see ``reopen_collapsed`` for why and what was measured. The record lists each point's reopened latents (``reopened``).

A fresh encoder (``training.chain_reopen: encoder``): each point after the first also starts
with the whole encoder from the initialisation (``fresh_encoder``), the decoder as reopened. Why: on mlp-d4 the
reopened chain held states of up to 11x the cold side's loss that passed every one-sided check (hysteresis); its
shared encoder layers explained only 2-9% of the residual its shut latents needed, and a fresh encoder closed 92%
of the loss gap in one point (reference/two_sided_run/reopen_trace/).

Resume: each finished point is saved (``point.pt``: weights, training record and the key of everything it
depends on: settings, code, data, seed and the points before it) in its own checkpoint folder, written
atomically. An interrupted job reuses the finished points whose key matches and resumes the interrupted one
from its ``last.ckpt``; once the whole chain has finished, a ``finished`` marker (``callbacks.FINISHED``) in the job's checkpoint folder
makes a rerun (forced, or code-triggered) train the chain afresh, as for a job without the chain (issue 23).

Divergence: a point whose training loss goes non-finite restarts from its starting weights with its first
learning-rate drop taken early (lr x lr_drop_factor, one drop fewer: the same final rate and the same convergence
rule, so the same equilibrium), at most ``lr_drops`` times; the point's record lists each restart
(``lr_restarts``). Why: mlp-d8 at the reference's lr 1e-3 diverged at T = 6.3e-3 (inf at update 4,592 of that
point, after eleven hotter points had converged), which stopped the whole chain (issue 19).

The members of the chain go out as one ensemble (``vae.stack_states``): ``model.pt`` and ``train.json`` of a
chain job look like those of a group job (one entry per member under ``members``), plus ``chain`` (what each
point started from, its updates and time); ``updates`` is the sum of every point's updates (the job's steps:
its points do not share steps).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .callbacks import FINISHED
from .provenance import atomic_path, config_hash
from .scan import t_label
from .vae import VAE, VAEConfig, latent_parameters, stack_states

POINT_FILE = "point.pt"


def point_key(cfg: VAEConfig, Ts: Sequence[float], V: float, seed: int, st: Any,
              reopen_threshold: float | None = None) -> str:
    """What the chain's point ``len(Ts) - 1`` depends on: the model, the settings, the training code, the data's
    V, the seed, every point of the chain before it (they made its starting weights) and, when the chain
    reopens, the threshold that decides what it reopens."""
    from .training import training_code_hash

    reopen = {} if reopen_threshold is None else {"reopen_threshold": float(reopen_threshold)}
    return config_hash({"vae": asdict(cfg), "chain": [float(t) for t in Ts], "V": float(V), "seed": int(seed),
                        "training": st.as_dict(), "code": training_code_hash(), **reopen})


def _load_point(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a torn or foreign file: train the point again
        return None
    return saved if isinstance(saved, dict) and saved.get("key") == key else None


def train_chain(data, cfg: VAEConfig, Ts: Sequence[float], *, settings: Any, seed: int,
                checkpoint_dir: str | Path, log_dir: str | Path, run_name: str, threads: int | None = None,
                progress: bool | None = None, reopen_threshold: float | None = None):
    """Train ``Ts`` as a warm-start chain, hottest first (``chain_from: cold``: coldest first), whatever their
    order; returns ``training.TrainResult``
    of the stacked ensemble (member e = point ``Ts[e]``) with the combined record. ``reopen_threshold``
    (``training.chain_reopen``): the validation M^2 at or below which a latent counts as collapsed, the
    config's ``analysis.active_threshold`` (``scan.model_settings`` passes it)."""
    from .settings import TrainingSettings
    from .training import TrainResult, train

    st = TrainingSettings.from_mapping(settings)
    if st.chain_reopen and reopen_threshold is None:
        raise ValueError("training.chain_reopen needs the threshold below which a latent counts as collapsed: "
                         "pass reopen_threshold (scan.model_settings sets it from analysis.active_threshold)")
    reopen_threshold = float(reopen_threshold) if st.chain_reopen else None
    single = cfg.with_ensemble(1)
    checkpoint_dir, log_dir = Path(checkpoint_dir), Path(log_dir)
    finished = checkpoint_dir / FINISHED
    if finished.exists():
        # The chain of a job that ran to the end: a rerun's point is to train afresh (issue 23).
        print(f"[{run_name}] the chain in {checkpoint_dir} is of a finished training; a rerun trains afresh",
              flush=True)
        for old in checkpoint_dir.glob(f"T*/{POINT_FILE}"):
            old.unlink()
        finished.unlink()
    sign = -1.0 if st.chain_from == "hot" else 1.0
    order = sorted(range(len(Ts)), key=lambda e: sign * float(Ts[e]))
    chain = [float(Ts[e]) for e in order]
    states, records = {}, {}
    prev_key, state = None, None
    for k, T in enumerate(chain):
        label = f"T{t_label(T)}"
        key = point_key(single, chain[: k + 1], data.V, seed, st, reopen_threshold)
        point_dir = checkpoint_dir / label
        saved = _load_point(point_dir / POINT_FILE, key)
        if saved is None:
            reopened: list[int] = []
            if st.chain_reopen and state is not None:
                state, reopened = reopen_collapsed(state, single, data, seed, reopen_threshold)
                if st.fresh_encoder:
                    state = fresh_encoder(state, single, seed)
            result, restarts = _train_point(data, single, T, st, seed=seed, point_dir=point_dir,
                                            log_dir=log_dir / label, run_name=f"{run_name} {label}", threads=threads,
                                            progress=progress, init_state=state, init_key=prev_key)
            record = {**result.record, "chain_init": "initialisation" if k == 0 else f"T{t_label(chain[k - 1])}",
                      "chain_reused": False, "lr_restarts": restarts, "chain_reopened": reopened}
            model_state = {name: v.detach().cpu().clone() for name, v in result.model.state_dict().items()}
            point_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(point_dir / POINT_FILE) as tmp:
                torch.save({"key": key, "state_dict": model_state, "record": record}, tmp)
        else:
            record = {**saved["record"], "chain_reused": True}
            model_state = saved["state_dict"]
            print(f"[{run_name} {label}] reused the finished point of an interrupted chain", flush=True)
        states[order[k]], records[order[k]] = model_state, record
        state, prev_key = model_state, key
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    finished.write_text(prev_key + "\n")
    members = range(len(Ts))
    ensemble = stack_states(single, [states[e] for e in members]).eval()
    return TrainResult(model=ensemble, record=combine_records([records[e] for e in members], cfg, run_name),
                       system=None)


@torch.no_grad()
def reopen_collapsed(state: Mapping[str, torch.Tensor], single: VAEConfig, data, seed: int, threshold: float
                     ) -> tuple[dict[str, torch.Tensor], list[int]]:
    """``state`` with its collapsed latents (validation M^2 <= ``threshold``) reopened: their encoder weights those
    of the initialisation (of a point trained from scratch with ``seed``: a mean that varies with the input, the
    log-variance -4), their decoder weights zero; and the reopened latents' indices.

    Why zero decoder weights: a reopened latent then adds nothing to the fitted reconstruction, and the gradient
    of its decoder weights is the covariance of its (low-noise) mean with the residual, so it grows along what
    the active latents leave unexplained. With the initialisation's decoder weights as well, Adam first shrinks
    them (they add noise of the data's whole variance) and the latent collapsed again before it found the
    residual: measured on the reference's linear chain at T = 1.6e-4, rank 13 stayed shut (M^2 0.002, oracle
    0.43) with them, and opened to the oracle (within 0.013 at every rank) with zero decoder weights.

    A neighbour with every latent collapsed is reopened whole: the point starts from the initialisation. Such a
    model's decoder carries nothing fitted (it outputs the data's mean), and with all its inputs silent an MLP
    decoder's hidden layers sit at a saddle of their own, so zero decoder weights from the latents have no
    gradient to grow along: measured on the reference's mlp-d4 chain (seeds 0 and 1), every latent collapsed at
    T = 1 (as at equilibrium there) and the chain then stayed fully collapsed at all 31 points down to T = 1e-6,
    at validation loss 8.6 where the cold side reaches 0.003, each point passing the loss rule in 18,000 updates."""
    from .measure import measure_split

    model = VAE(single)
    model.load_state_dict(state)
    weights = data.weights.get("validation")
    m2 = measure_split(model, data.val_tensor, data.V, threshold,
                       None if weights is None else weights.double().cpu().numpy(), curves=False)["M2"][0]
    collapsed = [int(k) for k in np.flatnonzero(m2 <= threshold)]
    torch.manual_seed(int(seed))  # train() seeds the same way before it builds the initialisation
    fresh = VAE(single)
    if len(collapsed) == single.latents:  # nothing fitted to keep: the whole model from the initialisation
        return {name: v.detach().clone() for name, v in fresh.state_dict().items()}, collapsed
    encoder, decoder = latent_parameters(model)
    for (param, axis, offset), (init, _, _) in zip(encoder, latent_parameters(fresh)[0]):
        for k in collapsed:
            param.select(axis, offset + k).copy_(init.select(axis, offset + k))
    for param, axis, offset in decoder:
        for k in collapsed:
            param.select(axis, offset + k).zero_()
    return {name: v.detach().clone() for name, v in model.state_dict().items()}, collapsed


def fresh_encoder(state: Mapping[str, torch.Tensor], single: VAEConfig, seed: int) -> dict[str, torch.Tensor]:
    """``state`` with its whole encoder (every ``enc*`` weight: an MLP's shared layers and outputs, the linear
    family's mean and log-variance) from the initialisation of ``seed``, the rest kept: run after
    ``reopen_collapsed``, the decoder is the neighbour's with the collapsed latents' weights zero."""
    torch.manual_seed(int(seed))  # train() seeds the same way before it builds the initialisation
    fresh = VAE(single).state_dict()
    encoder = [name for name in fresh if name.startswith("enc")]
    if not encoder or set(fresh) != set(state):
        raise ValueError(f"fresh_encoder: the state's weights {sorted(state)} are not a {single.family} VAE's "
                         f"{sorted(fresh)}")
    return {name: (fresh[name] if name in encoder else v).detach().clone() for name, v in state.items()}


def _train_point(data, single: VAEConfig, T: float, st: Any, *, seed: int, point_dir: Path, log_dir: Path,
                 run_name: str, threads: int | None, progress: bool | None, init_state, init_key):
    """One point of the chain; on a non-finite loss, restarted from the same starting weights with its first
    learning-rate drop taken early (module docstring). Returns (training.TrainResult, the restarts)."""
    from .lightning_module import NonFiniteLossError
    from .training import train

    restarts: list[dict[str, Any]] = []
    while True:
        try:
            result = train(data, single, [T], settings=st, seed=seed, run_dir=point_dir, checkpoint_dir=point_dir,
                           log_dir=log_dir, run_name=run_name, threads=threads, progress=progress,
                           init_state=init_state, init_key=init_key)
            return result, restarts
        except NonFiniteLossError as exc:
            if st.lr_drops < 1:
                raise
            restarts.append({"lr": st.lr, "error": str(exc)})
            st = replace(st, lr=st.lr * st.lr_drop_factor, lr_drops=st.lr_drops - 1)
            print(f"[{run_name}] {exc}; restarting the point from its starting weights at lr {st.lr:g} "
                  f"({st.lr_drops} learning-rate drop(s) left)", flush=True)


def combine_records(records: Sequence[Mapping[str, Any]], cfg: VAEConfig, run_name: str) -> dict[str, Any]:
    """One group's training record from the chain's one-point records: shared fields of the first, one member
    per point, updates and times summed (the points ran one after another)."""
    first = records[0]
    total = sum(int(r["updates"]) for r in records)
    ms = sum(float(r["ms_per_step"]) * int(r["updates"]) for r in records) / max(total, 1)
    return {
        **{k: v for k, v in first.items() if k not in ("members", "chain_init", "chain_reused", "lr_restarts",
                                                   "chain_reopened")},
        "run_name": run_name,
        "updates": total,  # the job's steps: the points ran one after another
        "point_updates": sum(int(r["point_updates"]) for r in records),
        "point_updates_unfrozen": sum(int(r["point_updates_unfrozen"]) for r in records),
        "resumed_from_step": sum(int(r["resumed_from_step"]) for r in records),
        "n_evaluations": sum(int(r["n_evaluations"]) for r in records),
        "hparams": asdict(cfg),
        "members": [r["members"][0] for r in records],
        "wall_time_s": sum(float(r["wall_time_s"]) for r in records),
        "ms_per_step": ms,
        "ms_per_step_all_members": ms,  # one member per point: nothing is ever frozen while a chain point trains
        "chain": [{"T": r["members"][0]["T_grid"], "init": r["chain_init"], "updates": int(r["updates"]),
                   "wall_time_s": float(r["wall_time_s"]), "reused": bool(r["chain_reused"]),
                   "lr_restarts": len(r.get("lr_restarts", [])),
                   "reopened": list(r.get("chain_reopened", []))} for r in records],
    }
