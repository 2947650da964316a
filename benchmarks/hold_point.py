"""Is a two-sided disagreement slow convergence or hysteresis? (issue 19): continue one finished chain point of a
run at its own T, from its own saved weights, for a fixed number of updates at the training learning rate, with
the loss rule and the learning-rate drops switched off, and record its active latents and validation loss.

Run it on the hot side's and the cold side's point of one model, seed and T. If the two move toward one state
(the hot side opening latents, or the cold side shutting them, with the losses meeting), the disagreement was
slow convergence at the update budget. If each stays where it is, the two are distinct stable states at one T:
hysteresis. This is a diagnostic, not a method of the workflow; it writes nothing into the run.

    python benchmarks/hold_point.py RUN_DIR MODEL SEED T [--updates N] [--every K] --out hold.json

RUN_DIR: a finished side of the two-sided run (``two_sided_run``: config.yaml, presets/, results/ with the chain's
saved points). Prints the summary as JSON and writes it, with the trace, to ``--out``.
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
from spectral_collapse.chain import POINT_FILE  # noqa: E402
from spectral_collapse.datamodule import ArrayDataModule  # noqa: E402
from spectral_collapse.measure import measure_split  # noqa: E402
from spectral_collapse.oracle import beta_of_T  # noqa: E402
from spectral_collapse.scan import t_label  # noqa: E402
from spectral_collapse.settings import TrainingSettings  # noqa: E402
from spectral_collapse.stability import validation_loss  # noqa: E402
from spectral_collapse.training import train  # noqa: E402
from spectral_collapse.vae import VAE  # noqa: E402

NEVER = -1.0  # a loss-rule tolerance no window meets: (best before - best since) / best before < -1 never holds


def validation_state(model: VAE, data: ArrayDataModule, threshold: float, T: float) -> dict[str, object]:
    """Active latents (M^2 above analysis.active_threshold), ranked M^2, and the weighted validation loss (the
    training objective, ``stability.validation_loss``), beta = T V / sigma_dec^2."""
    weights = data.weights.get("validation")
    measured = measure_split(model, data.val_tensor, data.V, threshold,
                             None if weights is None else weights.double().cpu().numpy(), curves=False)
    m2 = np.sort(np.asarray(measured["M2"][0], float))[::-1]
    beta = np.array([beta_of_T(T, data.V, model.config.sigma2)])  # as the training module sets it
    return {"active": int((m2 > threshold).sum()), "M2_ranked": m2[:16].round(4).tolist(),
            "loss": float(validation_loss(model, measured, beta)[0])}


class HoldTrace(pl.Callback):
    """The validation state every ``every`` updates."""

    def __init__(self, data: ArrayDataModule, threshold: float, T: float, every: int) -> None:
        self.data, self.threshold, self.T, self.every = data, threshold, T, every
        self.rows: list[dict[str, object]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if step % self.every == 0:
            was_training = pl_module.vae.training
            pl_module.vae.eval()
            with torch.no_grad():
                self.rows.append({"update": step, **validation_state(pl_module.vae, self.data, self.threshold, self.T)})
            pl_module.vae.train(was_training)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    point_arguments(parser)
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--every", type=int, default=25_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    run = Path(args.run_dir).resolve()
    config, settings, data, single = finished_side(run, args.model)
    training = TrainingSettings.from_mapping(settings["training"])
    held = {**training.as_dict(), "max_updates": args.updates,
            "tolerance": NEVER, "lr_drops": 0, "chain": False}
    pattern = f"*/seed{args.seed}/checkpoints/T{t_label(args.T)}/{POINT_FILE}"
    points = sorted((run / "results/runs" / args.model).glob(pattern))
    if len(points) != 1:
        raise SystemExit(f"{run}: {len(points)} saved chain points of {args.model} seed {args.seed} at T = "
                         f"{t_label(args.T)} (results/runs/{args.model}/{pattern}), not one: give a finished side of "
                         "the two-sided run, whose chain is one group job")
    saved = torch.load(points[0], weights_only=False)
    threshold = float(config["analysis"]["active_threshold"])  # what the workflow counts as active
    start_model = VAE(single)
    start_model.load_state_dict(saved["state_dict"])
    start_model.eval()
    with torch.no_grad():
        start = validation_state(start_model, data, threshold, args.T)
    trace = HoldTrace(data, threshold, args.T, args.every)
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hold-point-") as tmp:
        result = train(data, single, [args.T], settings=held, seed=args.seed, run_dir=tmp, threads=1,
                       progress=False, init_state=saved["state_dict"], init_key=f"hold-point {args.updates}",
                       extra_callbacks=[trace])
    result.model.eval()
    with torch.no_grad():
        end = validation_state(result.model, data, threshold, args.T)
    summary = {"run": str(run), "model": args.model, "seed": args.seed, "side": training.chain_from, "T": args.T,
               "lr": held["lr"],
               "updates": int(result.record["updates"]), "wall_s": time.perf_counter() - clock,
               "start": start, "end": end,
               "chain_point": {"updates": saved["record"]["members"][0]["updates"],
                               "final": saved["record"]["members"][0]["final"]}}
    Path(args.out).write_text(json.dumps({**summary, "trace": trace.rows}, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
