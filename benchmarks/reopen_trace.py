"""Why a hot-side chain point keeps latents shut that the cold side has open (issue 19): retrain one chain point
of a finished hot-side run from its hotter neighbour's saved weights, with the chain's reopening
(``chain.reopen_collapsed``), and trace the reopened latents.

Every ``--every`` updates it records, per reopened latent, the norm of its encoder-mean weights and of its decoder
weights (``vae.latent_parameters``); at the end the point's validation M_k^2, its active latents and its
validation loss. ``--hold N``: the reopened latents' encoder weights are put back to their reopened values after
each of the first N updates (their decoder weights train): whether the latents open when the KL term cannot
shrink their means before their decoder weights have grown. This is a diagnostic, not a method of the workflow.

    python benchmarks/reopen_trace.py RUN_DIR MODEL SEED T [--hold N] [--every K] --out trace.json

RUN_DIR: a finished hot-side working directory (``two_sided_run``: config.yaml, presets/, results/). Prints the
summary as JSON and writes it, with the trace, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from common import finished_side, point_arguments  # noqa: E402  (benchmarks/common.py; puts src/ on the path)
from spectral_collapse.chain import POINT_FILE, fresh_encoder, reopen_collapsed  # noqa: E402
from spectral_collapse.measure import measure_split  # noqa: E402
from spectral_collapse.scan import t_label  # noqa: E402
from spectral_collapse.settings import TrainingSettings  # noqa: E402
from spectral_collapse.training import train  # noqa: E402
from spectral_collapse.vae import VAE, VAEConfig, latent_parameters  # noqa: E402


class ReopenedTrace(pl.Callback):
    """Norms of the reopened latents' encoder-mean and decoder weights every ``every`` updates; for the first
    ``hold`` updates their encoder weights are put back to the reopened values after each update."""

    def __init__(self, latents: list[int], every: int, hold: int) -> None:
        self.latents, self.every, self.hold = latents, every, hold
        self.rows: list[dict[str, float]] = []
        self.start: list[torch.Tensor] | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        encoder, decoder = latent_parameters(pl_module.vae)
        if self.start is None:
            self.start = [p.detach().clone() for p, _, _ in encoder]
        step = int(trainer.global_step)
        if step <= self.hold:
            with torch.no_grad():
                for (param, axis, offset), start in zip(encoder, self.start):
                    for k in self.latents:
                        param.select(axis, offset + k).copy_(start.select(axis, offset + k))
        if step % self.every == 0:
            mean, _, _ = encoder[0]
            dec, axis, _ = decoder[0]
            for k in self.latents:
                self.rows.append({"update": step, "latent": k,
                                  "encoder_mean_norm": float(mean.select(2, k).norm()),
                                  "decoder_norm": float(dec.select(axis, k).norm())})


@torch.no_grad()
def align_to_residual(state: dict, single: VAEConfig, data, reopened: list[int], rows: int = 50_000) -> dict:
    """``--residual``: the reopened latents' mean weights set so that their means are the leading principal
    components of what the model leaves unexplained (the training residual x - decode(mu)), each fitted by least
    squares on the encoder's last hidden features and scaled to unit variance; decoder weights stay zero.
    Returns the state and each component's fit R^2 (how much of it the encoder's features still hold). A
    candidate start for a hot-side point: a reopened latent then carries residual structure from its first
    update, where the initialisation's random projection carries little."""
    model = VAE(single)
    model.load_state_dict(state)
    pick = torch.randperm(len(data.train_tensor), generator=torch.Generator().manual_seed(0))[:rows]
    x = data.train_tensor[pick].float()
    h = x.unsqueeze(0)
    for layer in model.enc.hidden:
        h = torch.nn.functional.silu(torch.baddbmm(layer.bias, h, layer.weight))
    mu, _ = model.encode(x)
    residual = (x - model.decode(mu)[0]).double()
    residual -= residual.mean(0)
    _, _, vt = torch.linalg.svd(residual, full_matrices=False)
    n = min(len(reopened), vt.shape[0])
    scores = residual @ vt[:n].T
    scores = (scores / scores.std(0)).double()
    features = torch.cat([h[0].double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(features, scores).solution  # (width + 1, n)
    fit_r2 = 1.0 - ((features @ coef - scores) ** 2).mean(0) / scores.var(0)
    out = model.enc.out
    for j, k in enumerate(reopened[:n]):
        out.weight[0, :, k] = coef[:-1, j].float()
        out.bias[0, 0, k] = coef[-1, j].float()
    return {name: v.detach().clone() for name, v in model.state_dict().items()}, fit_r2.tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    point_arguments(parser)
    parser.add_argument("--hold", type=int, default=0)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--residual", action="store_true", help="reopened means aligned to the residual's PCs")
    parser.add_argument("--fresh-encoder", action="store_true", help="the whole encoder from the initialisation")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    run = Path(args.run_dir).resolve()
    _, settings, data, single = finished_side(run, args.model)
    st = TrainingSettings.from_mapping(settings["training"])
    points = sorted((run / "results/runs" / args.model).glob(f"*/seed{args.seed}/checkpoints/T*/{POINT_FILE}"))
    by_T = {p.parent.name[1:]: p for p in points}
    grid = sorted((float(label) for label in by_T), reverse=True)
    here = grid.index(float(t_label(args.T)))
    hotter = by_T[t_label(grid[here - 1])]
    state = torch.load(hotter, weights_only=False)["state_dict"]
    threshold = float(settings["reopen_threshold"])
    state, reopened = reopen_collapsed(state, single, data, args.seed, threshold)
    fit_r2 = None
    if args.fresh_encoder:
        state = fresh_encoder(state, single, args.seed)
    if args.residual:
        state, fit_r2 = align_to_residual(state, single, data, reopened)
    trace = ReopenedTrace(reopened, args.every, args.hold)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reopen-trace-") as tmp:
        result = train(data, single, [args.T], settings=st.as_dict(), seed=args.seed, run_dir=tmp, threads=1,
                       progress=False, init_state=state, init_key=f"reopen-trace hold={args.hold} residual={args.residual} fresh={args.fresh_encoder}",
                       extra_callbacks=[trace])
    model: VAE = result.model
    weights = data.weights.get("validation")
    measured = measure_split(model, data.val_tensor, data.V, threshold,
                             None if weights is None else weights.double().cpu().numpy(), curves=False)
    m2 = np.asarray(measured["M2"][0], float)
    saved = torch.load(by_T[t_label(args.T)], weights_only=False)["record"]
    summary = {"run": str(run), "model": args.model, "seed": args.seed, "T": args.T, "hold": args.hold,
               "residual": args.residual, "residual_fit_r2": fit_r2, "fresh_encoder": args.fresh_encoder,
               "from": f"T{t_label(grid[here - 1])}", "reopened": len(reopened),
               "active": int((m2 > threshold).sum()), "M2_ranked": sorted(m2.tolist(), reverse=True)[:12],
               "updates": int(result.record["updates"]), "wall_s": time.perf_counter() - start,
               "status": result.record["members"][0]["status"], "final": result.record["members"][0]["final"],
               "chain_point": {"updates": saved["members"][0]["updates"], "final": saved["members"][0]["final"]}}
    Path(args.out).write_text(json.dumps({**summary, "trace": trace.rows}, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
