"""What a reference-preset training job costs per update at each MLP depth on this machine (`make depth-cost`).

One group job of the reference preset's 31 scan points (presets/reference.yaml: batch 256, 32 latents, width 64,
19 features; synthetic data of the study's shape) per depth, timed over a fixed number of updates with no member
frozen, one thread, through the train rule's code path (common.lightning_job). Prints `name: value` lines: ms per
update of the whole group at depth 2, 4, 8 and 16 and the ratio to depth 4. The reference run's measured mlp-d4
cost times that ratio projects what the depths it leaves out would cost here at equal updates (their
convergence is not assumed: the projection is of the cost per update).

Environment: BENCH_UPDATES (updates timed per depth, default 300).
"""

from __future__ import annotations

import os

from common import device, lightning_job, load_config, model_settings, out, quiet, synthetic_data

UPDATES = int(os.environ.get("BENCH_UPDATES", 300))


def main() -> None:
    quiet()
    from spectral_collapse.scan import model_t_grid

    config, how = load_config("presets/reference.yaml")
    out("config", how)
    Ts = model_t_grid(config, "mlp")
    data = synthetic_data(int(config["store"]["n_train"]))
    costs = {}
    for depth in (2, 4, 8, 16):
        job = lightning_job(data, model_settings(config, f"mlp-d{depth}"), Ts, UPDATES, dev=device(),
                            eval_every=UPDATES)
        costs[depth] = job["steady_ms_per_update"]
        out(f"mlp-d{depth}_group_ms_per_update", round(costs[depth], 2),
            f"{len(Ts)} points, {UPDATES} updates, evaluation excluded; job {job['job_s']:.0f} s")
    for depth, ms in costs.items():
        out(f"mlp-d{depth}_cost_vs_d4", round(ms / costs[4], 3))


if __name__ == "__main__":
    main()
