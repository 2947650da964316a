"""The reference run from both sides (issue 19): one scan per model, seed and side, assembled into one evidence
folder with its equilibrium test, cost and provenance.

Each side of a model and seed is a workflow run of its own (a working directory with config.yaml, its presets
and results/): the hot side is the warm-start chain with collapsed latents reopened (``training.chain_reopen``),
the cold side the chain from the cold end (``training.chain_from: cold``). ``assemble`` copies each pair's scan
tables (latents, pruning, runs: what the analysis reads) and writes:

- ``<pair>/hot/``, ``<pair>/cold/``: the scan tables of each side;
- ``<pair>/two_sided/``: ``analysis.start_check.two_sided`` on the pair: per point the two sides' largest
  ranked-M^2 gap, the hot side's analysis with the two-sided check (points at equilibrium from both sides, every
  other point with its reason, resolved thresholds per seed, for the linear family against lambda_k / V);
- ``pca.parquet``: the training PCA (the same store for every run: checked);
- ``cost_jobs.csv``: every training and measurement job (CPU and wall seconds from Snakemake's benchmark,
  updates, points at the update budget); ``cost_points.csv``: every chain point (updates, wall seconds, what it
  started from, the latents it reopened);
- ``summary.json``: per pair the counts, exceptions and resolved ranks, the cost per pair and in all;
- ``provenance.json``: each run's code commit, presets, data checksums; packages and machine.

``python -m spectral_collapse.two_sided_run OUT --pair NAME HOT_DIR COLD_DIR [--pair ...]`` (run directories).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .paths import ANALYSIS_ROOT, PCA_TABLE, VERIFIED
from .provenance import package_versions, write_json

SIDES = ("hot", "cold")
TABLES = ("latents", "pruning", "runs")


def _models(run_dir: Path) -> list[str]:
    analysis = run_dir / ANALYSIS_ROOT
    return sorted(p.name for p in analysis.iterdir() if all((p / f"scan_{t}.parquet").is_file() for t in TABLES))


def _check_pair(name: str, runs: Mapping[str, Path]) -> list[str]:
    """The models both sides scanned; a missing run or a different store is an error naming the fix."""
    for side, run_dir in runs.items():
        if not (run_dir / ANALYSIS_ROOT).is_dir():
            raise FileNotFoundError(f"pair {name}: {run_dir} holds no {ANALYSIS_ROOT}: run the {side} side's scan "
                                    "there first (snakemake in that working directory)")
    models = sorted(set(_models(runs["hot"])) & set(_models(runs["cold"])))
    if not models:
        raise FileNotFoundError(f"pair {name}: no model scanned on both sides in {runs['hot']} and {runs['cold']}")
    pcas = [pd.read_parquet(run_dir / PCA_TABLE) for run_dir in runs.values()]
    if not pcas[0].equals(pcas[1]):
        raise ValueError(f"pair {name}: the two sides' PCA tables differ: the runs used different stores")
    return models


def cost_tables(run_dir: Path, models: Sequence[str], pair: str, side: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(jobs, points) of one run: every training and measurement job, and every chain point of its training."""
    from .bundle import job_times

    jobs, points = [], []
    for job in job_times(run_dir, list(models)):
        chain = job.pop("chain", None) or []
        jobs.append({"pair": pair, "side": side, **{k: v for k, v in job.items() if not isinstance(v, (list, dict))}})
        for point in chain:
            points.append({"pair": pair, "side": side, "model": job["model"], "seed": job["seed"],
                           "T": float(point["T"]), "updates": int(point["updates"]),
                           "wall_s": float(point["wall_time_s"]), "init": point["init"],
                           "reopened": len(point.get("reopened", [])), "lr_restarts": int(point.get("lr_restarts", 0))})
    return pd.DataFrame(jobs), pd.DataFrame(points)


def _budget_points(run_dir: Path, models: Sequence[str]) -> int:
    runs = pd.concat([pd.read_parquet(run_dir / ANALYSIS_ROOT / m / "scan_runs.parquet") for m in models])
    return int((runs["status"] == "budget").sum())


def _pair_cost(jobs: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side, g in jobs.groupby("side"):
        for rule, r in g.groupby("rule"):
            out[f"{side}_{rule}_cpu_s"] = float(r["cpu_s"].sum())
    out["cpu_s"] = float(jobs["cpu_s"].sum())
    return out


def assemble(out: str | os.PathLike, pairs: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
             configfiles: Sequence[str] = ()) -> dict[str, Any]:
    """Write the evidence folder ``out`` from ``pairs`` ({name: (hot run dir, cold run dir)}); returns the
    summary. ``configfiles``: the presets (merged over config.yaml) whose analysis settings the runs used."""
    from .analysis.start_check import two_sided
    from .config import load_config

    out = Path(out)
    cfg = load_config(*configfiles)["analysis"]
    summary: dict[str, Any] = {"pairs": {}, "tolerance_note": "two sides agree when every ranked M_k^2 (train split) "
                               "is within 0.05 (analysis.start_check.BRACKET_TOL)"}
    provenance: dict[str, Any] = {"runs": {}, "package_versions": package_versions(),
                                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                                  "assembled": "python -m spectral_collapse.two_sided_run OUT --pair NAME HOT COLD ..."}
    all_jobs, all_points, pca = [], [], None
    for name, (hot, cold) in pairs.items():
        runs = {"hot": Path(hot), "cold": Path(cold)}
        models = _check_pair(name, runs)
        for side, run_dir in runs.items():
            for model in models:
                dst = out / name / side / model
                dst.mkdir(parents=True, exist_ok=True)
                for table in TABLES:
                    shutil.copyfile(run_dir / ANALYSIS_ROOT / model / f"scan_{table}.parquet",
                                    dst / f"scan_{table}.parquet")
            jobs, points = cost_tables(run_dir, models, name, side)
            all_jobs.append(jobs)
            all_points.append(points)
            provenance["runs"][f"{name}/{side}"] = _run_provenance(run_dir)
        side_pca = pd.read_parquet(runs["hot"] / PCA_TABLE)
        if pca is None:
            pca = side_pca
            pca.to_parquet(out / "pca.parquet")
        elif not pca.equals(side_pca):
            raise ValueError(f"pair {name}: its PCA table differs from the first pair's: the runs used different stores")
        shutil.copyfile(runs["hot"] / PCA_TABLE, out / name / "hot" / "pca.parquet")
        result = two_sided(out / name / "hot", out / name / "cold", out / name / "two_sided", cfg=cfg)
        (out / name / "hot" / "pca.parquet").unlink()
        pair_jobs = pd.concat([j for j in all_jobs if len(j) and (j["pair"] == name).any()])
        summary["pairs"][name] = {
            "models": models,
            **{model: {k: v for k, v in result[model].items() if k != "exceptions"} for model in models},
            "points_at_budget": {side: _budget_points(run_dir, models) for side, run_dir in runs.items()},
            "cost": _pair_cost(pair_jobs)}
    jobs, points = pd.concat(all_jobs, ignore_index=True), pd.concat(all_points, ignore_index=True)
    jobs.to_csv(out / "cost_jobs.csv", index=False)
    points.to_csv(out / "cost_points.csv", index=False)
    summary["cost"] = {"cpu_s": float(jobs["cpu_s"].sum()), "core_hours": float(jobs["cpu_s"].sum()) / 3600.0,
                       "train_cpu_s": float(jobs.loc[jobs["rule"] == "train", "cpu_s"].sum()),
                       "measure_cpu_s": float(jobs.loc[jobs["rule"] == "measure", "cpu_s"].sum())}
    write_json(out / "summary.json", summary)
    write_json(out / "provenance.json", provenance)
    return summary


def _run_provenance(run_dir: Path) -> dict[str, Any]:
    """What one side's run was: its presets (the overlay that makes it this side), code, data checksums."""
    presets = {p.name: p.read_text() for p in sorted((run_dir / "presets").glob("*.yaml"))} \
        if (run_dir / "presets").is_dir() else {}
    record: dict[str, Any] = {"presets": presets}
    verified = run_dir / VERIFIED
    if verified.is_file():
        record["data_sha256"] = json.loads(verified.read_text()).get("files")
    code = run_dir / "code_commit.txt"
    if code.is_file():
        record["code_commit"] = code.read_text().strip()
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="assemble the two-sided reference run's evidence (issue 19)")
    parser.add_argument("out")
    parser.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "HOT", "COLD"), required=True,
                        help="a model and seed's hot-side and cold-side run directories")
    parser.add_argument("--configfile", nargs="*", default=[], help="the presets the runs used (analysis settings)")
    args = parser.parse_args(argv)
    tmp = Path(args.out).with_name(Path(args.out).name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    summary = assemble(tmp, {name: (hot, cold) for name, hot, cold in args.pair}, args.configfile)
    if Path(args.out).exists():
        shutil.rmtree(args.out)
    tmp.rename(args.out)  # complete or not there: never a half-written folder under the final name
    print(json.dumps(summary["cost"], indent=1))


if __name__ == "__main__":
    main()
