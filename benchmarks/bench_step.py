"""`make bench`: where the time goes, and how the project's training compares with a plain PyTorch loop.

One process (plus short subprocess jobs for the sweep), settings from config.yaml via
``spectral_collapse.config.load_config`` (model mlp-d4: 4 x 64 MLP VAE, 32 latents, 19 features, batch 256,
Adam lr 3e-4), on the device of ``BENCH_DEVICE`` (auto: the GPU when there is one, else the CPU), on the real
WorldClim data (store built in a scratch folder from $WORLDCLIM_DIR, default ../shared/worldclim/wc2.1_10m_bio)
or, with ``BENCH_DATA=synthetic``, on synthetic data of the study's shape (benchmarks/common.py). Prints, one
`name: value` line each:

- store build, training-data load, PCA and figure-regeneration times;
- ms/step of (a) a plain eager PyTorch loop (nn.Linear layers, torch.optim.Adam with default settings,
  batches indexed from the training tensor on the device) and (b) the project's own Lightning training job
  (spectral_collapse.training.train, the code path of the `train` rule), same model, batch, update count,
  device and thread count, alternated over rounds (best round of each reported, every round printed);
  (b)'s step time is its update loop (Lightning's batch loop, optimizer steps, batch gathering) without the
  periodic validation passes and checkpoint writes, which (a) does not do; they are printed separately,
  and so is (b)'s end-to-end fit time per update;
- peak memory (VmHWM, peak resident set) of a training job (a subprocess);
- sweep throughput, scan points x updates per second, of one point per job against one job training the
  config's whole T grid as one group (both fresh subprocesses: imports, data, Trainer, training, validation,
  checkpoints, model.pt); and a projection of both to the config's full update budget from the measured
  fixed and per-update costs;
- last line: `step_speedup_vs_plain_torch: X.XX` = (a) ms/step / (b) ms/step.

Environment: WORLDCLIM_DIR; BENCH_DEVICE (auto); BENCH_DATA (store | synthetic; store); BENCH_UPDATES (updates
per timing round, default 1000), BENCH_ROUNDS (3), BENCH_SWEEP_UPDATES (1000), BENCH_SWEEP_ROUNDS (2 jobs of
each layout, fastest compared), BENCH_THREADS (1: what the train rule gets, profiles/default set-threads);
BENCH_SCRATCH, BENCH_RESULTS_DIR (benchmarks/common.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    MODEL_ID,
    REPO,
    describe_device,
    device,
    lightning_job,
    load_config,
    model_settings,
    out,
    peak_rss_mb,
    quiet,
    results_dir,
    scratch,
    synchronize,
    synthetic_data,
    worldclim_folder,
)

UPDATES = int(os.environ.get("BENCH_UPDATES", 1000))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
SWEEP_UPDATES = int(os.environ.get("BENCH_SWEEP_UPDATES", 1000))
THREADS = int(os.environ.get("BENCH_THREADS", 1))
SWEEP_ROUNDS = int(os.environ.get("BENCH_SWEEP_ROUNDS", 2))
DATA = os.environ.get("BENCH_DATA", "store").strip().lower()
T_STEP = 0.1  # scan point of the step-time comparison (beta = T V / sigma_dec^2)


# ----------------------------------------------------------------------------------------------------
# (a) the plain eager PyTorch loop


def plain_torch_ms_per_step(x, settings: dict, beta: float, updates: int, seed: int = 0) -> tuple[float, float]:
    """What one would write without the project: nn.Sequential encoder/decoder, default Adam, on the device of
    the training tensor ``x``. Returns (wall, CPU) milliseconds per step."""
    import torch
    from torch import nn

    m = settings["model"]
    depth, width, L = int(settings["depth"]), int(m.get("width", 64)), int(m.get("latents", 32))
    d = x.shape[1]
    sigma2 = float(settings["decoder"]["sigma2"])
    bs, lr = int(settings["training"]["batch_size"]), float(settings["training"]["lr"])

    def mlp(n_in: int, n_out: int) -> nn.Sequential:
        layers, prev = [], n_in
        for _ in range(depth):
            layers += [nn.Linear(prev, width), nn.SiLU()]
            prev = width
        layers.append(nn.Linear(prev, n_out))
        return nn.Sequential(*layers)

    torch.manual_seed(seed)
    enc, dec = mlp(d, 2 * L).to(x.device), mlp(L, d).to(x.device)
    with torch.no_grad():
        enc[-1].bias[L:] = float(m.get("logvar_bias_init", -4.0))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=lr)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    n = x.shape[0]

    def step():
        xb = x[torch.randint(0, n, (bs,), generator=gen, device=x.device)]
        mu, logvar = enc(xb).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        x_hat = dec(z)
        D = (xb - x_hat).pow(2).sum(-1).mean() / (2 * sigma2)
        R = (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)).sum(-1).mean()
        loss = D + beta * R
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(20):  # warm-up (allocator, Adam state)
        step()
    synchronize(x.device)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(updates):
        step()
    synchronize(x.device)
    return 1e3 * (time.perf_counter() - start) / updates, 1e3 * (time.process_time() - cpu) / updates


# ----------------------------------------------------------------------------------------------------
# sweep jobs (subprocesses)


def sweep_job(spec: dict) -> None:
    """Body of one subprocess training job: what the train rule's script does (imports, data, Trainer, training
    with validation and checkpoints, model.pt, train.json): ``group.train_group_job`` on the store, or on
    synthetic data ``group.train_group`` and ``vae.save_trained`` (BENCH_DATA=synthetic)."""
    t0 = time.perf_counter()
    quiet()
    import torch

    from spectral_collapse import group

    torch.set_num_threads(int(spec["threads"]))
    t_import = time.perf_counter() - t0
    out_dir = Path(spec["out_dir"])
    kw = {"model_id": MODEL_ID, "seed": 0, "threads": int(spec["threads"]), "progress": False}
    if spec.get("store"):
        res = group.train_group_job(spec["store"], spec["settings"], spec["T"], model_path=out_dir / "model.pt",
                                    record_path=out_dir / "train.json", **kw)
    else:
        from spectral_collapse.training import model_meta
        from spectral_collapse.vae import save_trained

        res = group.train_group(synthetic_data(int(spec["n_train"])), spec["settings"], spec["T"], run_dir=out_dir,
                                **kw)
        save_trained(out_dir / "model.pt", res.model, model_meta(res.record, res.run_ids))
    s = res.record
    fit_s = float(s["ms_per_step"]) * int(s["updates"]) / 1e3
    print(json.dumps({"import_s": t_import, "fit_s": fit_s, "updates": int(s["updates"]),
                      "job_s": time.perf_counter() - t0, "vmhwm_mb": peak_rss_mb()}), flush=True)


def run_sweep_job(spec: dict) -> dict:
    """Start a fresh interpreter for one job: its wall time and its own peak RSS (reported by the job)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--job", json.dumps(spec)],
                                stdout=so, stderr=se, env=env, text=True)
        _, status, _ = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    if proc.returncode != 0:
        raise RuntimeError(f"sweep job failed ({proc.returncode}):\n{stderr[-3000:]}")
    info = json.loads(stdout.strip().splitlines()[-1])
    return {**info, "wall_s": wall, "maxrss_mb": info["vmhwm_mb"]}


# ----------------------------------------------------------------------------------------------------
# figures


def figure_timing(config: dict, tmp: Path) -> tuple[str, str]:
    """Time the figure functions on the cached tables of the results folder (``BENCH_RESULTS_DIR``, default
    results/) if they exist; else on synthetic linear-oracle scan tables (the analysis tests' generator),
    saying so."""
    from spectral_collapse.plotting.render import FIGURES, render

    import matplotlib

    matplotlib.use("Agg")
    cached = []
    for model in ("linear", MODEL_ID):
        base = results_dir() / "analysis" / model
        inputs = {"latents": base / "scan_latents.parquet", "pruning": base / "scan_pruning.parquet",
                  "runs": base / "scan_runs.parquet", "spectra": base / "spectra.parquet",
                  "d_eff": base / "d_eff.parquet", "analysis": base / "analysis.json",
                  "pca": results_dir() / "analysis" / "pca.parquet",
                  "maps": base / "latent_maps.nc", "correlations": base / "latent_correlations.parquet"}
        if all(Path(p).exists() for k, p in inputs.items() if k not in ("maps", "correlations")):
            cached.append((model, inputs))
    if cached:
        start, n = time.perf_counter(), 0
        for model, inputs in cached:
            for fig in FIGURES:
                if fig == "maps" and not (inputs["maps"].exists() and inputs["correlations"].exists()):
                    continue
                render(fig, inputs, tmp / f"{model}-{fig}.png", tmp / f"{model}-{fig}.pdf", model)
                n += 1
        return f"{time.perf_counter() - start:.2f}", f"{n} figures (PNG+PDF) from the cached tables in {results_dir() / 'analysis'}"
    # no cached tables: the same figure functions on synthetic scan tables
    import numpy as np

    from spectral_collapse.analysis.collect import collect_scan
    from spectral_collapse.provenance import write_parquet
    from spectral_collapse.analysis.model_analysis import analyse_model
    from spectral_collapse.analysis.synthetic import linear_scan_tables, pca_table, write_run_dirs
    from spectral_collapse.scan import t_grid

    lam = np.array([9.8, 4.2, 1.9, 1.2, 0.65, 0.53, 0.31, 0.17, 0.11, 0.067, 0.018, 0.015, 0.0053, 0.003])
    lam = np.r_[lam, 19.0 - lam.sum() - 1e-4, 1e-4]
    T_k = np.sort(lam / 19.0)[::-1]
    grid = t_grid(config["scan"]["T"])
    lat, prn, runs = linear_scan_tables(T_k, grid, seeds=(0,), noise=0.01)
    paths = write_run_dirs(tmp / "runs", lat, prn, runs)
    latents, pruning, run_table = collect_scan(paths["latents"], paths["pruning"], paths["runs"])
    pca = pca_table(T_k)
    spectra, d_eff, analysis = analyse_model(latents, pruning, run_table, pca, config["analysis"], "linear")
    inputs = {}
    for name, df in {"latents": latents, "pruning": pruning, "runs": run_table, "spectra": spectra,
                     "d_eff": d_eff, "pca": pca}.items():
        inputs[name] = tmp / f"{name}.parquet"
        write_parquet(df, inputs[name])
    inputs["analysis"] = tmp / "analysis.json"
    inputs["analysis"].write_text(json.dumps(analysis, allow_nan=False, default=float))
    start, n = time.perf_counter(), 0
    for fig in FIGURES:
        if fig == "maps":
            continue
        render(fig, inputs, tmp / f"{fig}.png", tmp / f"{fig}.pdf", "linear")
        n += 1
    return (f"{time.perf_counter() - start:.2f}",
            f"{n} figures (PNG+PDF); no cached results/analysis tables yet (run `make run`), so drawn from "
            f"synthetic linear-oracle scan tables on the config's {len(grid)}-point T grid; maps need a trained model")


# ----------------------------------------------------------------------------------------------------


def load_data(config: dict, tmp: Path):
    """The benchmark's data: (ArrayDataModule, store path or None). The real store (built here, timed), or
    synthetic data of the study's shape with BENCH_DATA=synthetic (the store lines then say so)."""
    from spectral_collapse.datamodule import ArrayDataModule

    n_train = int(config["store"]["n_train"])
    if DATA == "synthetic":
        t0 = time.perf_counter()
        data = synthetic_data(n_train)
        out("store_build_s", "n/a", "BENCH_DATA=synthetic: no store")
        out("training_data_load_s", f"{time.perf_counter() - t0:.3f}",
            f"synthetic data of the study's shape generated: train {n_train}, validation and test of the 10' grid's sizes")
        return data, None
    if DATA != "store":
        sys.exit(f"bench: BENCH_DATA={DATA!r}; expected store or synthetic")
    from spectral_collapse.store import build_store

    worldclim = worldclim_folder("bench")
    store = tmp / "worldclim.zarr"
    t0 = time.perf_counter()
    build_store(worldclim, store, config["store"])
    out("store_build_s", f"{time.perf_counter() - t0:.2f}", f"19 rasters -> Zarr, n_train={n_train}, from {worldclim}")
    t0 = time.perf_counter()
    data = ArrayDataModule.from_store(store)
    n_rows = {s: len(data.split(s)) for s in ("train", "validation", "test")}
    out("training_data_load_s", f"{time.perf_counter() - t0:.3f}",
        "train/validation/test tensors from the store: " + ", ".join(f"{k} {v}" for k, v in n_rows.items()))
    return data, store


def main() -> None:
    quiet()
    t_bench = time.perf_counter()
    import torch

    from spectral_collapse.oracle import beta_of_T
    from spectral_collapse.pca import pca
    from spectral_collapse.scan import model_t_grid

    config, config_note = load_config()
    settings = model_settings(config)
    dev = device()
    torch.set_num_threads(THREADS)
    load = os.getloadavg()
    out("bench", f"device {dev.type}: {describe_device(dev)}; {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{THREADS} torch thread(s) in every timed job (the train rule's set-threads), load average at start {load[0]:.2f}")
    out("bench_settings", f"model {MODEL_ID} (4 x 64 MLP VAE, 32 latents, 19 features), batch "
        f"{settings['training']['batch_size']}, lr {settings['training']['lr']}, {UPDATES} updates x {ROUNDS} "
        f"rounds per timing, eval_every {settings['training']['eval_every']}; config {config_note}; data {DATA}")

    with scratch("bench-") as tmp:
        data, store = load_data(config, tmp)
        n_rows = {s: len(data.split(s)) for s in ("train", "validation", "test")}

        x_train = data.split("train").numpy()
        t0 = time.perf_counter()
        p = pca(x_train)
        out("pca_s", f"{time.perf_counter() - t0:.3f}", f"covariance eigendecomposition of {len(x_train)} x 19, "
            f"lambda_1/V={p.lambda_over_V[0]:.4f}")

        try:
            seconds, note = figure_timing(config, tmp / "figures")
        except Exception as exc:  # the figure code is another stage's; say why rather than fail the bench
            seconds, note = "n/a", f"figure functions failed: {type(exc).__name__}: {exc}"
        out("figure_regeneration_s", seconds, note)

        # ---- per-step timing: (a) plain eager loop vs (b) the project's Lightning job, alternated
        beta = float(beta_of_T(T_STEP, data.V, settings["decoder"]["sigma2"]))
        x_t = data.split("train").to(dev)
        lightning_job(data, settings, T_STEP, 50, dev=dev, threads=THREADS)  # warm-up: lazy imports and setup
        plain, light = [], []
        for r in range(ROUNDS):
            plain.append(plain_torch_ms_per_step(x_t, settings, beta, UPDATES, seed=r))
            light.append(lightning_job(data, settings, T_STEP, UPDATES, dev=dev, threads=THREADS))
        best_light = min(light, key=lambda j: j["ms_per_step"])
        plain_wall = min(w for w, _ in plain)
        out("plain_torch_ms_per_step", f"{plain_wall:.3f}",
            f"eager loop on {dev.type}, nn.Linear layers, torch.optim.Adam defaults; wall per round "
            + ", ".join(f"{w:.3f}" for w, _ in plain) + "; CPU per round " + ", ".join(f"{c:.3f}" for _, c in plain))
        out("lightning_ms_per_step", f"{best_light['ms_per_step']:.3f}",
            f"project job (training.train) update loop on {best_light['device']}; wall per round "
            + ", ".join(f"{j['ms_per_step']:.3f}" for j in light)
            + "; CPU per round " + ", ".join(f"{j['cpu_ms_per_step']:.3f}" for j in light))
        cpu_speedup = min(c for _, c in plain) / min(j["cpu_ms_per_step"] for j in light)
        out("step_speedup_cpu_time", f"{cpu_speedup:.2f}",
            "the same ratio on process CPU time, less sensitive to other processes on a shared machine")
        out("lightning_validation_s", f"{best_light['val_s']:.2f}",
            f"{best_light['n_val']} validation passes over {n_rows['validation']} cells + checkpoint writes in "
            f"{best_light['updates']} updates (not in the step time; the plain loop does none)")
        out("lightning_job_ms_per_update", f"{best_light['job_ms_per_update']:.3f}",
            "end to end: Trainer setup, update loop, validation, checkpoints")

        # ---- sweep throughput: one point per job vs one job training the whole T grid as one group
        grid = [float(t) for t in model_t_grid(config, "mlp")]
        sweep_settings = {**settings, "training": {**settings["training"], "max_updates": SWEEP_UPDATES,
                                                   "tolerance": 0.0, "patience_fraction": 1.0}}  # nobody converges
        base = {"store": str(store) if store else None, "n_train": len(x_train), "settings": sweep_settings,
                "threads": THREADS}
        # Each layout's job runs SWEEP_ROUNDS times, alternating; the fastest run of each is compared.
        singles, ensembles = [], []
        for r in range(SWEEP_ROUNDS):
            singles.append(run_sweep_job({**base, "T": [grid[len(grid) // 2]], "out_dir": str(tmp / f"single{r}")}))
            ensembles.append(run_sweep_job({**base, "T": grid, "out_dir": str(tmp / f"ensemble{r}")}))
        single = min(singles, key=lambda j: j["wall_s"])
        ens = min(ensembles, key=lambda j: j["wall_s"])
        out("peak_memory_training_job_mb", f"{single['maxrss_mb']:.0f}",
            f"peak RSS (VmHWM) of a one-point {MODEL_ID} training job (subprocess, {DATA} data, n_train="
            f"{len(x_train)}, {SWEEP_UPDATES} updates)")
        E = len(grid)
        r_single = SWEEP_UPDATES / single["wall_s"]
        r_ens = E * SWEEP_UPDATES / ens["wall_s"]
        out("sweep_one_point_per_job", f"{r_single:.1f} point-updates/s",
            f"1 point, {SWEEP_UPDATES} updates, best of {SWEEP_ROUNDS} jobs ("
            + ", ".join(f"{j['wall_s']:.1f}" for j in singles) + f" s): job {single['wall_s']:.1f} s = imports {single['import_s']:.1f} s + "
            f"fit {single['fit_s']:.1f} s (updates + validation) + {single['wall_s'] - single['import_s'] - single['fit_s']:.1f} s "
            f"interpreter start, data load, Trainer, model.pt, exit")
        out("sweep_ensemble_job", f"{r_ens:.1f} point-updates/s",
            f"{E} points (the config's mlp T grid) in one job, {SWEEP_UPDATES} updates, best of {SWEEP_ROUNDS} jobs ("
            + ", ".join(f"{j['wall_s']:.1f}" for j in ensembles) + f" s): job {ens['wall_s']:.1f} s = imports "
            f"{ens['import_s']:.1f} s + fit {ens['fit_s']:.1f} s + {ens['wall_s'] - ens['import_s'] - ens['fit_s']:.1f} s; "
            f"peak RSS {ens['maxrss_mb']:.0f} MB")
        out("sweep_throughput_ratio", f"{r_ens / r_single:.2f}", f"ensemble / one-point-per-job at {SWEEP_UPDATES} updates")
        # projection to the config's budget: fixed (per job) + per-update costs, both measured above
        budget = int(settings["training"]["max_updates"])
        fixed1, per1 = single["wall_s"] - single["fit_s"], single["fit_s"] / SWEEP_UPDATES
        fixedE, perE = ens["wall_s"] - ens["fit_s"], ens["fit_s"] / SWEEP_UPDATES
        proj = (E * budget / (fixedE + perE * budget)) / (budget / (fixed1 + per1 * budget))
        out("sweep_throughput_ratio_at_config_budget", f"{proj:.2f}",
            f"projected for {budget} updates per point from the measured fixed ({fixed1:.1f} s vs {fixedE:.1f} s "
            f"per job) and per-update ({1e3 * per1:.2f} vs {1e3 * perE / E:.2f} ms per point) costs; not measured")
        out("bench_wall_s", f"{time.perf_counter() - t_bench:.1f}",
            f"load average at end {os.getloadavg()[0]:.2f}")
    out("step_speedup_vs_plain_torch", f"{plain_wall / best_light['ms_per_step']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--job":
        sweep_job(json.loads(sys.argv[2]))
    else:
        main()
