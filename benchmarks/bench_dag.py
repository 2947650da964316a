"""`make bench-dag`: the whole training stage of a sweep through Snakemake, one scan point per job against
groups of several points per job: what `scan.points_per_job` buys a laptop user, measured end to end.

`make bench` times single training jobs; a sweep through the DAG also pays Snakemake's job launches and the
measurement jobs (one per point, or one per group). This script runs the `training` target (every scan point
trained and measured) of the MLP family over config.yaml's T grid twice, in two fresh working folders (under
a scratch folder, benchmarks/common.py) that share nothing but the WorldClim rasters:

- one point per job (`points_per_job: 1`, the default layout);
- groups of ceil(points / cores) points, so that both layouts keep every core busy.

Both layouts run the same rules, `train` and `measure` (every job trains a group of scan points).

Both use profiles/default (one thread per training job) with `--cores` BENCH_DAG_CORES, the same update
budget BENCH_DAG_UPDATES for every point (early stopping off: patience = the whole budget), and the
config's model. Printed: wall time of each layout, the summed job times of its train and measure rules
(Snakemake's benchmark files), and the ratio. Takes about 3 minutes per round here.

Environment: WORLDCLIM_DIR (default ../shared/worldclim/wc2.1_10m_bio), BENCH_DAG_UPDATES (1000),
BENCH_DAG_CORES (2: profiles/default's core count), BENCH_DAG_ROUNDS (1; with more, the layouts alternate and
the fastest round of each is compared).
"""

from __future__ import annotations

import copy
import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import REPO, load_config, out, scratch, worldclim_folder  # benchmarks/common.py

UPDATES = int(os.environ.get("BENCH_DAG_UPDATES", 1000))
CORES = int(os.environ.get("BENCH_DAG_CORES", 2))
ROUNDS = int(os.environ.get("BENCH_DAG_ROUNDS", 1))
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def bench_config(config: dict, points_per_job: int, worldclim: Path) -> dict:
    """config.yaml with the MLP family only, a fixed budget for every point, and the chosen layout (a whole
    config: with `-d`, the Snakefile's relative `configfile:` would be looked up in the working folder)."""
    out = copy.deepcopy(config)
    out["data"]["worldclim_dir"] = str(worldclim)
    out["scan"].update({"families": ["mlp"], "points_per_job": points_per_job})
    budget = {"max_updates": UPDATES, "patience_fraction": 1.0}
    out["training"].update(budget)
    out["models"]["mlp"] = {**out["models"]["mlp"]}
    if "training" in out["models"]["mlp"]:  # a family block overrides the global one
        out["models"]["mlp"]["training"] = {**out["models"]["mlp"]["training"], **budget}
    return out


def snakemake(workdir: Path, target: str) -> float:
    """Run one target in `workdir` with the repository's Snakefile and profile; its wall time in seconds."""
    cmd = [str(SNAKEMAKE), target, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
           str(workdir / "bench.yaml"), "--cores", str(CORES), "--quiet", "all"]
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)  # this tree's library
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench-dag: `{' '.join(cmd)}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


def job_seconds(workdir: Path, rule: str) -> tuple[float, int]:
    """Sum and count of the job times Snakemake recorded for one rule (its `benchmark:` files)."""
    total, n = 0.0, 0
    for tsv in (workdir / "results" / "benchmarks" / rule).rglob("*.tsv"):
        rows = list(csv.DictReader(tsv.open(), delimiter="\t"))
        total += float(rows[-1]["s"])
        n += 1
    return total, n


def main() -> None:
    from spectral_collapse.scan import model_t_grid

    worldclim = worldclim_folder("bench-dag")
    config, _ = load_config()
    n_points = len(model_t_grid(config, "mlp"))
    chunk = math.ceil(n_points / CORES)
    models = ", ".join(f"mlp-d{d}" for d in config["models"]["mlp"]["depths"])
    out("bench_dag", f"{os.cpu_count()} CPU cores, snakemake --cores {CORES}, profiles/default; model {models}, "
        f"{n_points} scan points (config.yaml's T grid), {UPDATES} updates each; load average at start "
        f"{os.getloadavg()[0]:.2f}")
    walls: dict[str, list[float]] = {"one_point_per_job": [], "vectorized": []}
    with scratch("bench-dag-") as tmp:
        for r in range(ROUNDS):  # the layouts alternate; the fastest round of each is compared
            for name, ppj in (("one_point_per_job", 1), ("vectorized", chunk)):
                workdir = tmp / f"{name}{r}"
                workdir.mkdir()
                (workdir / "bench.yaml").write_text(yaml.safe_dump(bench_config(config, ppj, worldclim)))
                data_s = snakemake(workdir, "data")  # store built untimed (the same for both layouts)
                walls[name].append(snakemake(workdir, "training"))
                train_rule, measure_rule = "train", "measure"
                t_train, n_train = job_seconds(workdir, train_rule)
                t_measure, n_measure = job_seconds(workdir, measure_rule)
                out(f"dag_{name}_s", f"{walls[name][-1]:.1f}",
                    f"round {r + 1}, points_per_job {ppj}: {n_train} {train_rule} jobs ({t_train:.1f} s summed) + "
                    f"{n_measure} {measure_rule} jobs ({t_measure:.1f} s summed) on {CORES} cores; data target "
                    f"{data_s:.1f} s, untimed")
    best = {name: min(w) for name, w in walls.items()}
    out("dag_sweep_throughput_ratio", f"{best['one_point_per_job'] / best['vectorized']:.2f}",
        f"wall time of one point per job / groups of {chunk} points (fastest of {ROUNDS} round(s) each), "
        f"training target, {UPDATES} updates per point")


if __name__ == "__main__":
    main()
