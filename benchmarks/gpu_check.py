"""`make gpu-check`: the GPU check of issue 14, one run of at most 5 minutes on one GPU.

Prints one `name: value` line per number (a note in parentheses may follow):

1. The CUDA tests, ``pytest -m cuda tests/test_cuda.py``: one training update, one validation pass and one
   measurement on CUDA against the CPU, a whole training job on the GPU resumed bit for bit, and the count of
   host synchronisations in the update loop (``cuda_tests_*``).
2. What `make bench` measures, on the GPU: the project's training job (``training.train``, the train rule's
   code path, through Lightning) for mlp-d4 at E = 1, 16 and 121 members (scan points trained as one
   ensemble): ms per update and point-updates per second (``mlp-d4_E<E>_ms_per_update``,
   ``mlp-d4_E<E>_point_updates_per_s``), each over the warm epochs of a fixed budget (no member converging),
   plus the cost of one evaluation (validation pass + checkpoint) and the peak GPU memory; mlp-d4 at E = 121
   with half of the members frozen (converged); every other model of the paper preset at E = 121; the
   measurement (``measure.measure_split``) of each; and the plain eager PyTorch loop at E = 1, for scale.
3. A projection of the paper preset's GPU-hours with one ensemble job per model and seed
   (presets/paper-gpu.yaml: points_per_job 121): per job, the fixed cost + max_updates x ms/update +
   (max_updates / eval_every) x the evaluation cost + the measurement of the three splits; an upper bound
   (every member trains to the budget); and each job's GPU memory from the formula of docs/gpu.md.

Data: synthetic data of the study's shape (benchmarks/common.py; the GPU machine gets no WorldClim copy):
19 features, the paper preset's 500,000 training cells, the 10' grid's 71,377 validation and 73,231 test
cells with cell-area-like weights. Settings: presets/paper.yaml + presets/paper-gpu.yaml through
``spectral_collapse.config.load_config`` (merged without validation where snakemake is not installed).

Without a GPU it is a dry run on the CPU: the first line is `gpu: none (dry run on CPU)`, every step runs at
tiny sizes (the numbers then mean nothing), the CUDA tests are skipped (they say why) and are rehearsed with
the CPU standing in for the GPU (``CUDA_TESTS_DEVICE=cpu``: checks the test code, not CUDA).

On a GPU it writes the cost model's gpu entry from these timings to results/benchmarks/gpu_cost.json
(spectral_collapse.cost.GPU_MEASUREMENT), where the workflow reads it: training jobs are then booked with the
measured costs instead of the stated default (the dry run names the file it used).

Run from the repository root: ``make gpu-check`` (the venv's torch), or with any Python that has a CUDA
build of torch and pytorch-lightning, numpy, pandas, pyyaml and pytest (docs/gpu.md):
``PYTHONPATH=src python3 benchmarks/gpu_check.py``. Exit status 1 when a CUDA test failed.
Environment: GPU_CHECK_UPDATES (updates per timed job on a GPU, default 1500), GPU_CHECK_EVAL_EVERY (500),
GPU_CHECK_BUDGET_S (270: optional steps are skipped, saying so, once this much time has passed),
BENCH_SCRATCH (scratch folder, benchmarks/common.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

T_START = time.perf_counter()

from common import (  # noqa: E402  (benchmarks/common.py; also puts src/ on the path when needed)
    HELDOUT_ROWS,
    REPO,
    describe_device,
    lightning_job,
    load_config,
    model_settings,
    out,
    quiet,
    synchronize,
    synthetic_data,
)

PRESETS = (REPO / "presets" / "paper.yaml", REPO / "presets" / "paper-gpu.yaml")
FOCUS = "mlp-d4"  # the paper's default model, timed at several ensemble sizes
BUDGET_S = float(os.environ.get("GPU_CHECK_BUDGET_S", 270))
CONTEXT_GB = 0.6  # CUDA context and cuBLAS workspace, outside torch's allocator (added to the estimates)


def sizes(gpu: bool, config: dict) -> dict:
    """Timing budget and data sizes: the paper's data on a GPU; tiny ones for the CPU dry run."""
    if gpu:
        return {"updates": int(os.environ.get("GPU_CHECK_UPDATES", 1500)),
                "eval_every": int(os.environ.get("GPU_CHECK_EVAL_EVERY", 500)),
                "n_train": int(config["store"]["n_train"]), **{f"n_{k}": v for k, v in HELDOUT_ROWS.items()},
                "plain_updates": 500, "threads": 2}  # 2: the SLURM profile's set-threads for train
    return {"updates": 4, "eval_every": 2, "n_train": 2048, "n_validation": 512, "n_test": 256,
            "plain_updates": 5, "threads": 1}


def spread(grid: list[float], E: int) -> list[float]:
    """E scan points spread over the grid (all of it when E = len(grid))."""
    if E == 1:
        return [grid[len(grid) // 2]]
    return [grid[round(i * (len(grid) - 1) / (E - 1))] for i in range(E)]


def run_cuda_tests(gpu: bool) -> bool:
    """pytest -m cuda tests/test_cuda.py; on the CPU also the rehearsal. True when nothing failed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    runs = [("cuda_tests", {})] + ([] if gpu else [("cuda_tests_cpu_rehearsal", {"CUDA_TESTS_DEVICE": "cpu"})])
    ok = True
    for name, extra in runs:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-q", "-rs",
                                   "-p", "no:cacheprovider"], cwd=REPO, env={**env, **extra}, capture_output=True,
                                  text=True, timeout=240)
        except subprocess.TimeoutExpired as exc:
            out(name, "timed out", f"pytest still running after {exc.timeout:.0f} s; stopped")
            ok = False
            continue
        text = proc.stdout + proc.stderr
        counts = {k: 0 for k in ("passed", "failed", "skipped", "errors")}
        summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
        for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary[-1] if summary else ""):
            counts["errors" if kind.startswith("error") else kind] += int(n)
        reasons = sorted({m.group(1).strip() for m in re.finditer(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", text)})
        note = "pytest -m cuda tests/test_cuda.py" + (" with CUDA_TESTS_DEVICE=cpu (the CPU standing in for the GPU)"
                                                     if extra else "") + f", {time.perf_counter() - t0:.1f} s"
        out(name, summary[-1].strip("= ") if summary else f"pytest exit {proc.returncode}", note)
        for kind, n in counts.items():
            out(f"{name}_{kind}", n)
        for reason in reasons:
            out(f"{name}_skip_reason", reason)
        if proc.returncode not in (0, 5) or counts["failed"] or counts["errors"] or not summary:
            ok = False
            sys.stderr.write(text[-6000:] + "\n")
    return ok


def freeze_first(k: int):
    """A callback that freezes members [0, k) from the start (as callbacks.Convergence does once they have
    converged; it runs after Convergence's on_train_start): the job trains one run of the other members."""
    import pytorch_lightning as pl

    class FreezeFirst(pl.Callback):
        def on_train_start(self, trainer, module) -> None:
            E = module.vae.ensemble
            module.set_members([e >= k for e in range(E)], [module.lr] * E)

    return FreezeFirst()


def params_per_member(settings: dict) -> int:
    from spectral_collapse.vae import VAE, VAEConfig
    from spectral_collapse.worldclim import N_BIO

    return sum(p.numel() for p in VAE(VAEConfig.from_settings(settings, N_BIO)).parameters() if p.requires_grad)


def memory_estimate_gb(settings: dict, E: int, rows: dict) -> dict:
    """GPU memory of one job (docs/gpu.md), float32, in GB (1e9 bytes), torch's allocations; the CUDA context
    (~CONTEXT_GB) comes on top. Training: weights, gradient and the two Adam moments; the activations an update
    keeps for its backward pass; the epoch's stacked batches; the three splits; the cached validation noise
    and the validation blocks. Measurement (a second process in the same job): the posterior means of the
    largest split, one noise chunk, the blocks."""
    from spectral_collapse.lightning_module import VAL_BLOCK_GPU
    from spectral_collapse.measure import BLOCK_ROWS_GPU, NOISE_ROWS

    m, st = settings["model"], settings["training"]
    d, L = 19, int(m["latents"])
    D, w = (int(settings["depth"]), int(m.get("width", 64))) if settings["family"] == "mlp" else (0, 0)
    B, ev = int(st["batch_size"]), int(st["eval_every"])
    n_all = rows["train"] + rows["validation"] + rows["test"]
    per_row = (4 * D + 3) * w + 7 * L + 2 * d  # floats kept per sample and member during an update
    block_row = 2 * w + 5 * L + 3 * d  # floats alive per (row x member) of a validation / measurement block
    train = 4 * (4 * params_per_member(settings) * E + E * B * per_row + ev * B * d + n_all * d + 2 * n_all
                 + E * rows["validation"] * L + VAL_BLOCK_GPU * block_row)
    measure = 4 * (E * rows["train"] * L + E * NOISE_ROWS * L + BLOCK_ROWS_GPU * block_row + n_all * d)
    return {"train": train / 1e9, "measure": measure / 1e9}


def write_cost_measurement(gpu: bool, dev, job: dict, fixed_s: float) -> None:
    """On a GPU: the cost model's gpu entry from these timings, written where the workflow reads it
    (spectral_collapse.cost.GPU_MEASUREMENT under the repository: results/benchmarks/gpu_cost.json); the next
    snakemake invocation books training jobs with it. The CPU dry run writes nothing (its numbers mean nothing)."""
    from spectral_collapse import cost

    path = REPO / cost.GPU_MEASUREMENT
    if not gpu:
        out("gpu_cost_measurement", "not written", f"dry run on CPU; on a GPU it goes to {path}")
        return
    timings: dict = {"fixed_s": fixed_s}
    for (model, E, frozen), r in job.items():
        if not frozen:
            timings.setdefault(model, {})[E] = {"ms_per_update": r["steady_ms_per_update"], "eval_s": r["eval_s"]}
    entry = cost.gpu_entry_from_timings(timings, focus=FOCUS)
    cost.write_gpu_measurement(path, entry, describe_device(dev))
    out("gpu_cost_measurement", str(path), "the workflow's GPU cost model from now on (delete it to go back to "
        "the stated default)")


def main() -> int:
    quiet()
    import torch

    from spectral_collapse.measure import measure_split
    from spectral_collapse.scan import ModelSpec, model_specs, model_t_grid, scan_groups
    from spectral_collapse.vae import VAE, VAEConfig

    startup_s = time.perf_counter() - T_START
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    if gpu:
        out("gpu", describe_device(dev), f"torch {torch.__version__}, CUDA {torch.version.cuda}, TF32 matmul "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}")
    else:
        out("gpu", "none (dry run on CPU)", f"torch {torch.__version__} sees no CUDA GPU: every step runs at tiny "
            "sizes; the numbers are not GPU numbers")
    config, config_note = load_config(*PRESETS)
    out("config", config_note)
    size = sizes(gpu, config)
    out("startup_s", f"{startup_s:.2f}", "interpreter start and imports (torch, Lightning, spectral_collapse)")

    # ---- 1. the CUDA tests
    tests_ok = run_cuda_tests(gpu)

    # ---- 2. timings
    t0 = time.perf_counter()
    data = synthetic_data(size["n_train"], size["n_validation"], size["n_test"])
    rows = {"train": size["n_train"], "validation": size["n_validation"], "test": size["n_test"]}
    out("data", f"synthetic, 19 features: train {rows['train']}, validation {rows['validation']}, test {rows['test']}",
        f"generated in {time.perf_counter() - t0:.2f} s")
    ppj = int(config["scan"]["points_per_job"])
    models = [spec.model_id for spec in model_specs(config)]
    settings = {m: model_settings(config, m) for m in models}
    grids = {m: model_t_grid(config, ModelSpec.from_id(m).family) for m in models}
    job = {}  # (model, E, frozen) -> lightning_job's dict

    def timed(model: str, E: int, frozen: int = 0) -> dict:
        res = lightning_job(data, settings[model], spread(grids[model], E), size["updates"], dev=dev,
                            threads=size["threads"], eval_every=size["eval_every"],
                            callbacks=[freeze_first(frozen)] if frozen else [])
        job[(model, E, frozen)] = res
        return res

    lightning_job(data, settings[FOCUS], spread(grids[FOCUS], 1), 2 * size["eval_every"], dev=dev,
                  threads=size["threads"], eval_every=size["eval_every"])  # warm-up: lazy imports, kernels, cuBLAS
    for E in sorted({1, 16, ppj}):
        r = timed(FOCUS, E)
        out(f"{FOCUS}_E{E}_ms_per_update", f"{r['steady_ms_per_update']:.3f}",
            f"{r['updates']} updates on {r['device']}, warm epochs; whole loop {r['ms_per_step']:.3f}")
        out(f"{FOCUS}_E{E}_point_updates_per_s", f"{1e3 * E / r['steady_ms_per_update']:.0f}")
        out(f"{FOCUS}_E{E}_eval_s", f"{r['eval_s']:.3f}",
            f"one validation pass over {rows['validation']} cells for {E} members + checkpoint")
        if gpu:
            out(f"{FOCUS}_E{E}_peak_gpu_memory_mb", f"{r['peak_gpu_mb']:.0f}", "torch's allocations")
    out("training_device", job[(FOCUS, 1, 0)]["device"])
    half = ppj // 2
    r = timed(FOCUS, ppj, frozen=half)
    out(f"{FOCUS}_E{ppj}_half_frozen_ms_per_update", f"{r['steady_ms_per_update']:.3f}",
        f"members 0..{half - 1} frozen, {ppj - half} training (one run of rows); all training: "
        f"{job[(FOCUS, ppj, 0)]['steady_ms_per_update']:.3f}")
    skipped = []
    for model in models:
        if model == FOCUS:
            continue
        if time.perf_counter() - T_START > BUDGET_S:
            skipped.append(model)
            continue
        r = timed(model, ppj)
        out(f"{model}_E{ppj}_ms_per_update", f"{r['steady_ms_per_update']:.3f}", f"{r['updates']} updates")
        out(f"{model}_E{ppj}_point_updates_per_s", f"{1e3 * ppj / r['steady_ms_per_update']:.0f}")
        out(f"{model}_E{ppj}_eval_s", f"{r['eval_s']:.3f}")
        if gpu:
            out(f"{model}_E{ppj}_peak_gpu_memory_mb", f"{r['peak_gpu_mb']:.0f}")
    for model in skipped:
        out(f"{model}_E{ppj}_ms_per_update", "skipped", f"time budget GPU_CHECK_BUDGET_S={BUDGET_S:.0f} s reached; "
            "projected from mlp-d4 by layer count")

    # measurement: measure_split of the test split, every model at E = ppj (and mlp-d4 at E = 1)
    measure_s = {}
    x_test, w_test = data.split("test"), data.weights["test"]
    for model, E in [(m, ppj) for m in models] + [(FOCUS, 1)]:
        if time.perf_counter() - T_START > BUDGET_S:
            out(f"{model}_E{E}_measure_test_s", "skipped", "time budget reached")
            continue
        vae = VAE(VAEConfig.from_settings(settings[model], data.n_features, ensemble=E)).to(dev)
        if gpu:
            torch.cuda.reset_peak_memory_stats(dev)
        synchronize(dev)
        t0 = time.perf_counter()
        measure_split(vae, x_test, data.V, 0.1, weights=w_test.numpy())
        synchronize(dev)
        measure_s[(model, E)] = time.perf_counter() - t0
        out(f"{model}_E{E}_measure_test_s", f"{measure_s[(model, E)]:.2f}",
            f"measure_split of {rows['test']} weighted cells" + (
                f", peak {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MB" if gpu else ""))
        del vae
    out("measure_device", str(dev))

    # the plain eager PyTorch loop at E = 1 (benchmarks/bench_step.py), for scale
    from bench_step import plain_torch_ms_per_step

    from spectral_collapse.oracle import beta_of_T

    s4 = settings[FOCUS]
    beta = float(beta_of_T(spread(grids[FOCUS], 1)[0], data.V, s4["decoder"]["sigma2"]))
    plain, _ = plain_torch_ms_per_step(data.split("train").to(dev), s4, beta, size["plain_updates"])
    out("plain_torch_E1_ms_per_update", f"{plain:.3f}", f"eager nn.Linear loop + torch.optim.Adam on {dev.type}")
    out("step_speedup_vs_plain_torch_E1", f"{plain / job[(FOCUS, 1, 0)]['steady_ms_per_update']:.2f}")
    out(f"ensemble_E{ppj}_throughput_vs_E1", f"{ppj * job[(FOCUS, 1, 0)]['steady_ms_per_update'] / job[(FOCUS, ppj, 0)]['steady_ms_per_update']:.1f}",
        f"{FOCUS}: point-updates/s of one {ppj}-member job over those of a one-point job")

    # ---- 3. projection of the paper preset (one ensemble job per model and seed)
    seeds = len(config["scan"]["seeds"])
    fixed_s = startup_s + max(r["fixed_s"] for r in job.values())
    paper_rows = {"train": int(config["store"]["n_train"]), **HELDOUT_ROWS}
    scale_rows = sum(paper_rows.values()) / rows["test"]  # measurement time is linear in the rows
    total_h, n_jobs = 0.0, 0
    ref = job[(FOCUS, ppj, 0)]
    for model in models:
        st = settings[model]["training"]
        U, ev = int(st["max_updates"]), int(st["eval_every"])
        r = job.get((model, ppj, 0))
        if r is None:  # skipped: scale mlp-d4 by its layer count (2 depth + 2 linear layers)
            depth = ModelSpec.from_id(model).depth
            factor = (2 * depth + 2) / (2 * ModelSpec.from_id(FOCUS).depth + 2)
            ms, ev_s = ref["steady_ms_per_update"] * factor, ref["eval_s"] * factor
        else:
            ms, ev_s = r["steady_ms_per_update"], r["eval_s"]
        meas = measure_s.get((model, ppj), measure_s.get((FOCUS, ppj), 0.0)) * scale_rows
        groups = scan_groups(grids[model], ppj)
        job_s = [fixed_s + U * ms / 1e3 + (U // ev) * ev_s + meas for _ in groups]  # a smaller last group: bound
        hours = seeds * sum(job_s) / 3600
        total_h += hours
        n_jobs += seeds * len(groups)
        out(f"paper_gpu_hours_{model}", f"{hours:.2f}",
            f"{seeds * len(groups)} job(s) of {len(groups[0])} points: {U} updates x {ms:.3f} ms + {U // ev} "
            f"evaluations x {ev_s:.3f} s + measurement {meas:.0f} s + fixed {fixed_s:.0f} s; upper bound, no "
            "member frozen")
        mem = memory_estimate_gb(settings[model], len(groups[0]), paper_rows)
        out(f"paper_job_gpu_memory_gb_{model}", f"{max(mem.values()) + CONTEXT_GB:.1f}",
            f"formula (docs/gpu.md): training {mem['train']:.2f} GB, measurement {mem['measure']:.2f} GB, "
            f"+ {CONTEXT_GB} GB CUDA context")
    out("paper_jobs", n_jobs, f"{len(models)} models x {seeds} seed(s), points_per_job {ppj}")
    out("paper_gpu_hours_total", f"{total_h:.2f}", "one GPU, jobs one after another; the sum of the lines above")
    one = job[(FOCUS, 1, 0)]
    st = settings[FOCUS]["training"]
    U, ev = int(st["max_updates"]), int(st["eval_every"])
    per_point = fixed_s + U * one["steady_ms_per_update"] / 1e3 + (U // ev) * one["eval_s"] + \
        measure_s.get((FOCUS, 1), 0.0) * scale_rows
    out(f"paper_gpu_hours_{FOCUS}_one_point_per_job", f"{seeds * len(grids[FOCUS]) * per_point / 3600:.2f}",
        f"for comparison: {seeds * len(grids[FOCUS])} one-point jobs (points_per_job 1) on the GPU")
    mem = memory_estimate_gb(settings[FOCUS], ppj, rows)
    r = job[(FOCUS, ppj, 0)]
    if gpu:
        out(f"{FOCUS}_E{ppj}_training_memory_estimate_mb", f"{mem['train'] * 1e9 / 2**20:.0f}",
            f"the formula at this run's sizes, against the measured peak {r['peak_gpu_mb']:.0f} MB")
    write_cost_measurement(gpu, dev, job, fixed_s)
    out("gpu_check_wall_s", f"{time.perf_counter() - T_START:.1f}", "" if gpu else "dry run on CPU")
    return 0 if tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
