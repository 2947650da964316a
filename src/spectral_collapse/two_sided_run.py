"""The reference run from both sides (issue 19): one scan per model, seed and side, assembled into one evidence
folder with its equilibrium test, cost and provenance.

Each side of a model and seed is a workflow run of its own (a working directory with config.yaml, its presets
and results/): the hot side is the warm-start chain with collapsed latents reopened and the whole encoder fresh
at every point (``training.chain_reopen: encoder``),
the cold side the chain from the cold end (``training.chain_from: cold``). ``assemble`` copies each pair's scan
tables (latents, pruning, runs: what the analysis reads) into an evidence folder, pair by pair (a run done over
several sessions is added to as its pairs finish):

- ``<pair>/hot/<model>/``, ``<pair>/cold/<model>/``: the scan tables of each side (the hot side of seed
  ``MAP_SEED`` also its latent correlations and maps, coarsened and packed as in the reference bundle). Once
  shipped, the hot side is the bundle's (``slim`` removes ``hot/`` after checking the bundle holds it exactly:
  the bundle's tables are the hot sides', seeds side by side), so nothing is kept twice;
- ``<pair>/two_sided/``: ``analysis.start_check.two_sided`` on the pair: per point the two sides' largest
  ranked-M^2 gap, the hot side's analysis with the two-sided check (points at equilibrium from both sides, every
  other point with its reason, resolved thresholds per seed, for the linear family against lambda_k / V), and
  the hot side's runs table marked with ``sides_agree``;
- ``<pair>/cost_jobs.csv``: every training and measurement job (CPU and wall seconds from Snakemake's benchmark,
  updates); ``<pair>/cost_points.csv``: every chain point (updates, wall seconds, what it started from, the
  latents it reopened); ``<pair>/pair.json``: the pair's counts, exceptions, resolved ranks, points at the
  budget, cost, and each run's presets, code commit and data checksums;
- ``pca.parquet``: the training PCA (the same store for every pair: checked);
- ``summary.json``, ``cost_jobs.csv``, ``cost_points.csv``: every pair's, with the cost in all.

Running it (``prepare`` and ``run``): every side of every pair is a working directory of its own under a root
outside the work tree (config.yaml, the presets, an overlay that picks the model, seed and side, the code commit),
run by Snakemake with one core; ``streams`` sides run at a time. The chains save every finished point, so a run
that was stopped continues where it stopped when ``run`` is called again (a finished side is not retrained).

    python -m spectral_collapse.two_sided_run run ROOT --pairs linear mlp-d2:0 mlp-d2:1 --streams 2
    python -m spectral_collapse.two_sided_run assemble OUT --pair NAME HOT_DIR COLD_DIR [--pair ...]
    python -m spectral_collapse.two_sided_run ship OUT     # the reference bundle from the assembled pairs
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .bundle import MAPS, PACKED
from .config import REPO_ROOT
from .paths import ANALYSIS_ROOT, PCA_TABLE, VERIFIED
from .analysis.start_check import BRACKET_TOL, TABLES, scanned_models
from .provenance import atomic_path, package_versions, write_json, write_parquet
from .scan import ModelSpec, model_seeds

SIDES = ("hot", "cold")
RUN_FILES = "run_files"  # a pair's copies of the hot run's data records, at their paths in the run
MAP_SEED = 0  # the workflow draws a model's maps from its first seed, 0 for every model of the reference
MAPS_GZ = MAPS + PACKED  # a model's maps as the bundle holds them
SIDE_TRAINING = {"hot": {"chain_reopen": "encoder"}, "cold": {"chain_from": "cold"}}  # training.chain is the preset's
PRESET = "presets/reference.yaml"


def parse_pair(spec: str) -> tuple[str, int]:
    """``mlp-d4:1`` -> ("mlp-d4", 1); ``linear`` -> ("linear", 0)."""
    model_id, _, seed = spec.partition(":")
    ModelSpec.from_id(model_id)  # a clear error for an unknown model id
    if seed and not seed.isdigit():
        raise ValueError(f"pair {spec!r}: the seed after ':' must be a number (e.g. mlp-d4:1)")
    return model_id, int(seed or 0)


def side_overlay(model_id: str, seed: int, side: str) -> dict[str, Any]:
    """The preset layer that makes a working directory one side of one model and seed."""
    spec = ModelSpec.from_id(model_id)
    overlay: dict[str, Any] = {"scan": {"families": [spec.family], "seeds": [seed], "model_seeds": {model_id: [seed]}},
                               "training": dict(SIDE_TRAINING[side])}
    if spec.family == "mlp":
        overlay["models"] = {"mlp": {"depths": [spec.depth]}}
    return overlay


def side_presets(preset: str = PRESET) -> list[str]:
    """A side's presets, relative to its working directory, in the order they are merged over config.yaml."""
    return [f"presets/{Path(preset).name}", "presets/overlay.yaml"]


def _write_once(path: Path, text: str, work: Path) -> None:
    """Write ``path`` unless it is there; one that differs stops: a resumed side must keep the settings it was
    started with (anything else would retrain it, and the record would name settings it did not run with)."""
    if path.is_file():
        if path.read_text() != text:
            raise ValueError(f"{path} differs from what this run would write (another side, or config.yaml / the "
                             f"preset changed since it started): remove {work} to start that side afresh, or "
                             "choose another root")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def prepare(root: str | os.PathLike, pairs: Sequence[str], preset: str = PRESET,
            sides: Sequence[str] = SIDES) -> dict[str, dict[str, Path]]:
    """The working directories of ``pairs`` (``parse_pair`` specs) under ``root``, ``sides`` of each:
    {pair name: {side: dir}}.
    An existing directory keeps its results (a rerun resumes) and must hold the config, preset and overlay it
    would get; each call appends the code it runs with to the side's ``code.jsonl``."""
    import yaml

    from .bundle import _git
    from .config import load_config

    root = Path(root).resolve()
    if REPO_ROOT.resolve() in (root, *root.parents):
        raise ValueError(f"{root} is inside the repository: give a root outside the work tree (its checkpoints and "
                         "results must not be committed or cleaned with it)")
    specs = [parse_pair(spec) for spec in pairs]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown or not sides:
        raise ValueError(f"--sides {' '.join(sides)}: choose from {' '.join(SIDES)}")
    if len(set(specs)) != len(specs):
        raise ValueError(f"--pairs {' '.join(pairs)} names a pair twice: two runs would share one working directory")
    code = {"commit": _git(REPO_ROOT, "rev-parse", "HEAD") or "unknown (not a git checkout)",
            "dirty": bool(_git(REPO_ROOT, "status", "--porcelain", "--untracked-files=no"))}
    out: dict[str, dict[str, Path]] = {}
    for model_id, seed in specs:
        name = f"{model_id}_seed{seed}"
        out[name] = {}
        for side in [s for s in SIDES if s in sides]:
            work = root / f"{name}_{side}"
            _write_once(work / "config.yaml", (REPO_ROOT / "config.yaml").read_text(), work)
            _write_once(work / "presets" / Path(preset).name, (REPO_ROOT / preset).read_text(), work)
            _write_once(work / "presets" / "overlay.yaml",
                        yaml.safe_dump(side_overlay(model_id, seed, side), sort_keys=True), work)
            load_config(*(work / p for p in side_presets(preset)))  # validated before anything runs
            with open(work / "code.jsonl", "a") as log:
                log.write(json.dumps(code) + "\n")
            out[name][side] = work
    return out


def snakemake_command(work: Path, preset: str = PRESET) -> list[str]:
    """One side's Snakemake call: the repository's workflow, the working directory's config and presets, one
    core (the training and measurement jobs single-threaded), resuming an interrupted job."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "--configfile", "config.yaml",
            *side_presets(preset), "--cores", "1",
            "--set-threads", "train=1", "measure=1", "--rerun-incomplete"]


def run(root: str | os.PathLike, pairs: Sequence[str], streams: int = 2, preset: str = PRESET,
        sides: Sequence[str] = SIDES) -> dict[str, int]:
    """Run ``sides`` of ``pairs`` (``prepare``), ``streams`` at a time, in the order given (a pair's hot side,
    then its cold side); each side's log in its ``snakemake.log``. Returns {working dir: exit status}. One side
    alone: the other is finished elsewhere (assemble takes each side's folder)."""
    from .config import load_config

    if not os.environ.get("WORLDCLIM_DIR") and load_config()["data"]["worldclim_dir"] is None:
        raise ValueError("set WORLDCLIM_DIR to a local WorldClim 2.1 copy (the folder of wc2.1_10m_bio_*.tif or the "
                         "zip): without it every side would download the archive and build its own store")
    dirs = prepare(root, pairs, preset, sides)
    works = [work for by_side in dirs.values() for work in by_side.values()]

    def one(work: Path) -> int:
        with open(work / "snakemake.log", "a") as log:
            return subprocess.run(snakemake_command(work, preset), cwd=work, stdout=log, stderr=subprocess.STDOUT).returncode

    with ThreadPoolExecutor(max_workers=max(1, int(streams))) as pool:
        status = dict(zip((str(w) for w in works), pool.map(one, works)))
    failed = [w for w, rc in status.items() if rc]
    if failed:
        print("failed (see snakemake.log there; run again to resume):\n  " + "\n  ".join(failed), file=sys.stderr)
    return status


def side_config(name: str, side: str, run_dir: Path, preset: str = PRESET) -> tuple[dict[str, Any], list[str]]:
    """(config, models) of one side's finished run: its own config.yaml and presets, checked against its summary
    and every job's recorded settings (``bundle._check_run``), and that it is the side it is named as."""
    from .bundle import _check_run, _run_config

    if not (run_dir / ANALYSIS_ROOT).is_dir():
        raise FileNotFoundError(f"pair {name}: {run_dir} holds no {ANALYSIS_ROOT}: run the {side} side's scan "
                                "there first (snakemake in that working directory)")
    presets = side_presets(preset)
    config = _run_config(run_dir, presets)
    training = config["training"]
    is_hot_side = training["chain"] and training["chain_reopen"] and training["chain_from"] == "hot"
    is_cold_side = training["chain"] and training["chain_from"] == "cold"
    if not (is_hot_side if side == "hot" else is_cold_side):
        raise ValueError(f"pair {name}: {run_dir} is not a {side}-side run (training.chain {training['chain']}, "
                         f"chain_reopen {training['chain_reopen']}, chain_from {training['chain_from']}): "
                         "pass the hot side first, then the cold side")
    models = scanned_models(run_dir / ANALYSIS_ROOT)
    _check_run(run_dir, config, models, presets)
    return config, models


def scan_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a run scans, per model: its seeds, T grid and points per job. Two configs that spell the scan
    differently (``scan.seeds`` [0, 1] beside ``model_seeds: {linear: [0]}``, or ``seeds: [0]``) scan the same."""
    from .scan import model_points_per_job, model_specs, model_t_grid

    return {spec.model_id: {"seeds": model_seeds(config, spec.model_id),
                            "T": model_t_grid(config, spec.family),
                            "points_per_job": model_points_per_job(config, spec.family)}
            for spec in model_specs(config)}


def _check_pair(name: str, runs: Mapping[str, Path]) -> tuple[list[str], dict[str, Any], pd.DataFrame]:
    """(the models both sides scanned, the hot side's config, the PCA table); a missing run, a side that is not the one it is
    named as, sides of another scan (models, seeds, T grid, store) or another analysis stops."""
    configs, models = {}, {}
    for side, run_dir in runs.items():
        configs[side], models[side] = side_config(name, side, run_dir)
    same = {"scan": scan_of(configs["hot"]) == scan_of(configs["cold"]),
            **{key: configs["hot"][key] == configs["cold"][key] for key in ("models", "store", "data", "analysis")}}
    if not all(same.values()):
        raise ValueError(f"pair {name}: the two sides differ in {[k for k, v in same.items() if not v]} "
                         f"({runs['hot']}, {runs['cold']}): both sides must scan the same models, seeds and T grid "
                         "of one store with one analysis")
    both = sorted(set(models["hot"]) & set(models["cold"]))
    if not both:
        raise FileNotFoundError(f"pair {name}: no model scanned on both sides in {runs['hot']} and {runs['cold']}")
    pcas = [pd.read_parquet(run_dir / PCA_TABLE) for run_dir in runs.values()]
    if not pcas[0].equals(pcas[1]):
        raise ValueError(f"pair {name}: the two sides' PCA tables differ: the runs used different stores")
    return both, configs["hot"], pcas[0]


def cost_tables(run_dir: Path, models: Sequence[str], pair: str, side: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(jobs, points) of one run: every training and measurement job, and every chain point of its training."""
    from .bundle import job_times

    jobs, points = [], []
    for job in job_times(run_dir, list(models)):
        chain = job.pop("chain", None) or []
        job["seed"] = int(str(job["seed"]).removeprefix("seed"))
        # Snakemake's benchmark times the last attempt only: a chain that reused points of an interrupted
        # attempt cost more than its benchmark says (its reused points' own times are in cost_points).
        job["reused_points"] = sum(bool(point.get("reused")) for point in chain)
        jobs.append({"pair": pair, "side": side, **{k: v for k, v in job.items() if not isinstance(v, (list, dict))}})
        for point in chain:
            points.append({"pair": pair, "side": side, "model": job["model"], "seed": job["seed"],
                           "T": float(point["T"]), "updates": int(point["updates"]),
                           "wall_s": float(point["wall_time_s"]), "init": point["init"],
                           "reused": bool(point.get("reused")), "reopened": len(point.get("reopened", [])),
                           "lr_restarts": int(point.get("lr_restarts", 0))})
    return pd.DataFrame(jobs), pd.DataFrame(points)


def _budget_points(side_dir: Path, models: Sequence[str]) -> int:
    """Points of one side (its copied tables in the pair's folder) that stopped at the update budget."""
    runs = pd.concat([pd.read_parquet(side_dir / m / "scan_runs.parquet") for m in models])
    return int((runs["status"] == "budget").sum())


def _cpu(jobs: pd.DataFrame) -> dict[str, Any]:
    """CPU seconds by side and rule, by rule, and in all."""
    out: dict[str, Any] = {f"{side}_{rule}_cpu_s": float(g["cpu_s"].sum())
                           for (side, rule), g in jobs.groupby(["side", "rule"])}
    out.update({f"{rule}_cpu_s": float(g["cpu_s"].sum()) for rule, g in jobs.groupby("rule")})
    out["cpu_s"] = float(jobs["cpu_s"].sum())
    return out


def add_pair(out: Path, name: str, hot: Path, cold: Path) -> dict[str, Any]:
    """Write ``out/name`` (under a temporary name, renamed when complete) from one pair's runs; returns the pair's
    record (``pair.json``). The hot side also keeps its latent correlations and maps (coarsened as in the
    reference bundle): what a bundle shipped from the hot side redraws its maps from. The analysis settings are
    the runs' own (the same on both sides: checked); a point one side lacks stops."""
    runs = {"hot": Path(hot), "cold": Path(cold)}
    models, config, pca = _check_pair(name, runs)
    if (out / "pca.parquet").is_file() and not pd.read_parquet(out / "pca.parquet").equals(pca):
        raise ValueError(f"pair {name}: its PCA table differs from {out / 'pca.parquet'}: the runs used another "
                         "store than the pairs already there")
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        record = _write_pair(tmp, name, runs, models, config, pca)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "pca.parquet").is_file():
            write_parquet(pca, out / "pca.parquet")
        if (out / name).exists():
            shutil.rmtree(out / name)
        tmp.rename(out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _write_pair(tmp: Path, name: str, runs: Mapping[str, Path], models: list[str], config: Mapping[str, Any],
                pca: pd.DataFrame) -> dict[str, Any]:
    from .analysis.start_check import two_sided
    from .bundle import _coarsen_maps, pack
    from .storepath import store_paths

    cfg = config["analysis"]
    paths = store_paths(config["store"], runs["hot"], data=config["data"])
    for rel in (paths.description, paths.verified):  # the data's records, as a bundle shipped from it holds them
        (tmp / RUN_FILES / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runs["hot"] / rel, tmp / RUN_FILES / rel)

    jobs, points, provenance = [], [], {}
    for side, run_dir in runs.items():
        for model in models:
            src, dst = run_dir / ANALYSIS_ROOT / model, tmp / side / model
            dst.mkdir(parents=True)
            for table in TABLES:
                shutil.copyfile(src / f"scan_{table}.parquet", dst / f"scan_{table}.parquet")
            if side == "hot" and model_seeds(config, model)[0] == MAP_SEED:  # 1 MB: one seed's
                if (src / "latent_correlations.parquet").is_file():  # gridded sources only
                    shutil.copyfile(src / "latent_correlations.parquet", dst / "latent_correlations.parquet")
                if (src / "latent_maps.nc").is_file():  # packed as the bundle packs them
                    _coarsen_maps(src / "latent_maps.nc", dst / "latent_maps.nc")
                    pack(dst / "latent_maps.nc", dst / MAPS_GZ)
                    (dst / "latent_maps.nc").unlink()
        side_jobs, side_points = cost_tables(run_dir, models, name, side)
        jobs.append(side_jobs)
        points.append(side_points)
        provenance[side] = _run_provenance(run_dir)
    pca.to_parquet(tmp / "hot" / "pca.parquet")
    result = two_sided(tmp / "hot", tmp / "cold", tmp / "two_sided", cfg=cfg)
    (tmp / "hot" / "pca.parquet").unlink()
    for model in models:
        unmatched = dict(result[model]["unmatched"], not_compared=result[model]["analysis"]["sides_not_compared"])
        if any(unmatched.values()):
            raise ValueError(f"pair {name}, {model}: points on one side only ({unmatched}): both sides must hold "
                             f"every point of the scan ({runs['hot']}, {runs['cold']})")
    jobs, points = pd.concat(jobs, ignore_index=True), pd.concat(points, ignore_index=True)
    jobs.to_csv(tmp / "cost_jobs.csv", index=False)
    points.to_csv(tmp / "cost_points.csv", index=False)
    record = {"pair": name, "models": models, "runs": provenance, "config": config,
              **{model: {k: v for k, v in result[model].items() if k != "exceptions"} for model in models},
              "points_at_budget": {side: _budget_points(tmp / side, models) for side in runs},
              "cost": _cpu(jobs)}
    write_json(tmp / "pair.json", record)
    return record


def summarize(out: str | os.PathLike) -> dict[str, Any]:
    """``summary.json``, ``cost_jobs.csv`` and ``cost_points.csv`` of every pair in ``out``."""
    out = Path(out)
    pairs = sorted(p.parent for p in out.glob("*/pair.json") if not p.parent.name.startswith("."))
    if not pairs:
        raise FileNotFoundError(f"{out} holds no pair (no */pair.json): assemble a pair first")
    jobs = pd.concat([pd.read_csv(p / "cost_jobs.csv") for p in pairs], ignore_index=True)
    points = pd.concat([pd.read_csv(p / "cost_points.csv") for p in pairs], ignore_index=True)
    jobs.to_csv(out / "cost_jobs.csv", index=False)
    points.to_csv(out / "cost_points.csv", index=False)
    summary = {"pairs": {p.name: json.loads((p / "pair.json").read_text()) for p in pairs},
               "agreement": f"two sides agree when every ranked M_k^2 (train split) is within {BRACKET_TOL} "
                            "(analysis.start_check.BRACKET_TOL)",
               "cost": {**_cpu(jobs), "core_hours": float(jobs["cpu_s"].sum()) / 3600.0},
               # the runs leave no record of their machine: the assembly runs where their results are
               "assembled_on": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "package_versions": package_versions()}}
    for record in summary["pairs"].values():
        record.pop("runs", None)  # each pair's provenance and config stay in its pair.json
        record.pop("config", None)
    write_json(out / "summary.json", summary)
    return summary


def assemble(out: str | os.PathLike, pairs: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]]
             ) -> dict[str, Any]:
    """Add ``pairs`` ({name: (hot run dir, cold run dir)}) to the evidence folder ``out`` (pairs already there
    stay: a run done over several sessions is assembled pair by pair), then ``summarize`` it; returns the
    summary."""
    out = Path(out)
    for name, (hot, cold) in pairs.items():
        add_pair(out, name, Path(hot), Path(cold))
    return summarize(out)


def shipped_config(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The config of a bundle made of every pair: the hot side's config of the first pair, its scan covering
    every pair's model and seed. Everything else must be the same in every pair."""
    from .config import validate_config

    def rest(config: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in config.items() if k != "scan"}
        out["models"] = {**config["models"], "mlp": {k: v for k, v in config["models"]["mlp"].items() if k != "depths"}}
        return out

    first = records[0]["config"]
    differ = [r["pair"] for r in records if rest(r["config"]) != rest(first)]
    if differ:
        raise ValueError(f"pairs {differ} ran with other settings than pair {records[0]['pair']} (beyond the model "
                         "and seed they scan): one bundle holds one study; assemble them apart")
    seeds: dict[str, set[int]] = {}
    for record in records:
        for model in record["models"]:
            seeds.setdefault(model, set()).update(model_seeds(record["config"], model))
    specs = [ModelSpec.from_id(m) for m in seeds]
    config = copy.deepcopy(first)
    config["scan"]["families"] = [f for f in ("linear", "mlp") if any(s.family == f for s in specs)]
    config["scan"]["seeds"] = sorted(set().union(*seeds.values()))
    config["scan"]["model_seeds"] = {m: sorted(v) for m, v in sorted(seeds.items())}
    config["models"]["mlp"]["depths"] = sorted(s.depth for s in specs if s.family == "mlp") or \
        first["models"]["mlp"]["depths"]
    return validate_config(config)


def _hot_table(pair_dir: Path, model: str, seed: int, name: str, shipped: Path) -> pd.DataFrame:
    """A scan table (``name``: latents, pruning, runs) of a pair's hot side: from the pair's ``hot/`` folder, or,
    for a pair ``slim`` slimmed, the seed's rows of the bundle it was shipped in (runs without ``sides_agree``)."""
    own = pair_dir / "hot" / model / f"scan_{name}.parquet"
    if own.is_file():
        return pd.read_parquet(own)
    bundled = shipped / ANALYSIS_ROOT / model / f"scan_{name}.parquet"
    table = pd.read_parquet(bundled) if bundled.is_file() else pd.DataFrame({"seed": []})
    table = table[table["seed"] == seed].drop(columns=["sides_agree"], errors="ignore").reset_index(drop=True)
    if table.empty:
        raise FileNotFoundError(f"{pair_dir}: its hot side of {model} is neither in {pair_dir / 'hot'} nor, as seed "
                                f"{seed}, in the bundle {shipped}: assemble the pair again")
    return table


def _hot_file(pair_dir: Path, model: str, name: str, shipped: Path) -> Path:
    """A file of the hot side of a pair's first seed (maps, correlations): the pair's own, or the bundle's."""
    for where in (pair_dir / "hot" / model, shipped / ANALYSIS_ROOT / model):
        if (where / name).is_file():
            return where / name
    raise FileNotFoundError(f"{pair_dir}: no {name} of {model} there or in the bundle {shipped}: the bundle's maps "
                            f"are those of seed {MAP_SEED}; assemble that pair first")


def ship(evidence: str | os.PathLike, bundle: str | os.PathLike | None = None,
         shipped: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write the reference bundle (``bundle.BUNDLE``) from the evidence folder: per model the hot side's scan
    tables of every pair (seeds side by side), its runs table marked with ``sides_agree``, so that the analysis
    accepts only points at equilibrium from both sides; the latent maps and correlations of the model's first
    seed (as the workflow draws them); the PCA and the data's records; the config covering every pair; summary and
    analysis.json drawn by the redraw workflow; provenance (the runs' code, the data checksums, every job's cost).
    Evidence folders of earlier runs in the bundle (``bundle.KEEP``) stay. A pair ``slim`` slimmed after an earlier
    ship reads its hot side from ``shipped`` (default: the reference bundle). Returns the provenance."""
    import tempfile

    import yaml

    from . import bundle as bundle_mod
    from .paths import SUMMARY
    from .provenance import config_hash

    evidence = Path(evidence)
    target = Path(bundle) if bundle is not None else bundle_mod.BUNDLE
    shipped = Path(shipped) if shipped is not None else bundle_mod.BUNDLE
    pair_dirs = sorted(p.parent for p in evidence.glob("*/pair.json") if not p.parent.name.startswith("."))
    if not pair_dirs:
        raise FileNotFoundError(f"{evidence} holds no pair: assemble the run first")
    records = [json.loads((p / "pair.json").read_text()) for p in pair_dirs]
    config = shipped_config(records)
    by_model: dict[str, list[tuple[int, Path]]] = {}
    for pair_dir, record in zip(pair_dirs, records):
        for model in record["models"]:
            by_model.setdefault(model, []).append((model_seeds(record["config"], model)[0], pair_dir))
    with tempfile.TemporaryDirectory(prefix="ship-") as tmp:
        work = Path(tmp)
        analysis = work / ANALYSIS_ROOT
        for model, pairs in sorted(by_model.items()):
            pairs.sort()
            dst = analysis / model
            dst.mkdir(parents=True)
            for name in ("latents", "pruning"):
                tables = [_hot_table(p, model, seed, name, shipped) for seed, p in pairs]
                write_parquet(pd.concat(tables, ignore_index=True), dst / f"scan_{name}.parquet")
            runs = [pd.read_parquet(p / "two_sided" / f"scan_runs_{model}.parquet") for _, p in pairs]
            write_parquet(pd.concat(runs, ignore_index=True), dst / "scan_runs.parquet")
            if pairs[0][0] != MAP_SEED:
                raise FileNotFoundError(f"{evidence}: no pair of {model} with seed {MAP_SEED}: the bundle's maps are "
                                        "the first seed's; assemble that pair first")
            bundle_mod.unpack(_hot_file(pairs[0][1], model, MAPS_GZ, shipped), dst / bundle_mod.MAPS)
            shutil.copyfile(_hot_file(pairs[0][1], model, "latent_correlations.parquet", shipped),
                            dst / "latent_correlations.parquet")
        shutil.copyfile(evidence / "pca.parquet", work / PCA_TABLE)
        run_files = pair_dirs[0] / RUN_FILES
        for src in run_files.rglob("*"):
            if src.is_file():
                (work / src.relative_to(run_files)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, work / src.relative_to(run_files))
        (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        redraw = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "workflow/Redraw.smk"),
                                 "--cores", "1", "-d", str(work)], capture_output=True, text=True)
        if redraw.returncode:
            raise RuntimeError(f"the redraw of the shipped tables failed:\n{redraw.stdout[-3000:]}\n{redraw.stderr[-3000:]}")
        bundle_mod.clear_bundle(target)
        target.mkdir(parents=True, exist_ok=True)
        for rel in bundle_mod._cached_files(config, work) + [SUMMARY] + [
                f"{ANALYSIS_ROOT}/{m}/analysis.json" for m in by_model]:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith(bundle_mod.MAPS):
                bundle_mod.pack(work / rel, target / f"{rel}{bundle_mod.PACKED}")
            else:
                shutil.copyfile(work / rel, target / rel)
        verified = json.loads((work / store_verified(config)).read_text())
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = pd.read_csv(evidence / "cost_jobs.csv") if (evidence / "cost_jobs.csv").is_file() else pd.DataFrame()
    commits = sorted({c["commit"] for r in records for side in r["runs"].values() for c in side.get("code", [])})
    record = {"config_hash": config_hash(config), "code_commit": commits[0] if len(commits) == 1 else commits,
              "data_sha256": verified["files"], "package_versions": package_versions(),
              "machine": bundle_mod.machine_record(),
              "jobs": jobs.to_dict("records"), "two_sided": {"evidence": str(evidence.name),
                                                              "pairs": [r["pair"] for r in records]},
              "exported": f"python -m spectral_collapse.two_sided_run ship {evidence.name} (the hot sides, each point "
                          "marked by the two-sided check)"}
    write_json(target / "provenance.json", record)
    problems = bundle_mod.check(target)
    if problems:
        raise RuntimeError("the shipped bundle is not valid:\n" + "\n".join(problems))
    return record


def slim(evidence: str | os.PathLike, shipped: str | os.PathLike | None = None) -> list[str]:
    """Remove each pair's ``hot/`` folder from the evidence once the bundle it was shipped in (``shipped``,
    default the reference bundle) holds exactly the same hot side: its seed's rows of every scan table (the runs
    table marked with ``sides_agree``, the marked table of the pair's ``two_sided/``), and for the first seed the
    same maps and correlations. What is left of a pair is what the bundle lacks: the cold side, the comparison
    and the record. Anything that differs stops, before anything is removed. Returns the slimmed pairs."""
    from . import bundle as bundle_mod

    evidence = Path(evidence)
    shipped = Path(shipped) if shipped is not None else bundle_mod.BUNDLE
    todo = []
    for record_path in sorted(evidence.glob("*/pair.json")):
        pair_dir = record_path.parent
        if pair_dir.name.startswith(".") or not (pair_dir / "hot").is_dir():
            continue
        record = json.loads(record_path.read_text())
        for model in record["models"]:
            seed = model_seeds(record["config"], model)[0]
            bundle_dir, own = shipped / ANALYSIS_ROOT / model, pair_dir / "hot" / model
            for name in TABLES:
                theirs = pd.read_parquet(bundle_dir / f"scan_{name}.parquet")
                theirs = theirs[theirs["seed"] == seed].reset_index(drop=True)
                mine = pd.read_parquet(pair_dir / "two_sided" / f"scan_runs_{model}.parquet") if name == "runs" \
                    else pd.read_parquet(own / f"scan_{name}.parquet")
                if not mine.equals(theirs):
                    raise ValueError(f"{own}: its scan_{name} is not seed {seed}'s in {bundle_dir}: ship the "
                                     "evidence first (python -m spectral_collapse.two_sided_run ship)")
            if (own / MAPS_GZ).is_file():
                with gzip.open(own / MAPS_GZ) as a, gzip.open(bundle_dir / MAPS_GZ) as b:
                    same_maps = a.read() == b.read()
                same_corr = pd.read_parquet(own / "latent_correlations.parquet").equals(
                    pd.read_parquet(bundle_dir / "latent_correlations.parquet"))
                if not (same_maps and same_corr):
                    raise ValueError(f"{own}: its maps or correlations are not those in {bundle_dir}: ship first")
        todo.append(pair_dir)
    for pair_dir in todo:
        shutil.rmtree(pair_dir / "hot")
    return [p.name for p in todo]


def store_verified(config: Mapping[str, Any]) -> str:
    """The data's verified record of ``config`` (relative to a working directory)."""
    from .storepath import store_paths

    return store_paths(config["store"], ".", data=config["data"]).verified


def _run_provenance(run_dir: Path) -> dict[str, Any]:
    """What one side's run was: its presets (the overlay that makes it this side), code, data checksums."""
    presets = {p.name: p.read_text() for p in sorted((run_dir / "presets").glob("*.yaml"))} \
        if (run_dir / "presets").is_dir() else {}
    record: dict[str, Any] = {"presets": presets}
    verified = run_dir / VERIFIED
    if verified.is_file():
        record["data_sha256"] = json.loads(verified.read_text()).get("files")
    code = run_dir / "code.jsonl"
    if code.is_file():  # one line per `run` call: the code each attempt ran with
        record["code"] = [json.loads(line) for line in code.read_text().splitlines() if line.strip()]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="issue 19's reference run from both sides: run it, assemble it")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run (or resume) both sides of each pair in working directories under ROOT")
    run_p.add_argument("root", help="a folder outside the repository")
    run_p.add_argument("--pairs", nargs="+", required=True, help="model[:seed], e.g. linear mlp-d4:0 mlp-d4:1")
    run_p.add_argument("--streams", type=int, default=2, help="sides run at a time (one core each)")
    run_p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES,
                       help="the sides to run (default both)")
    shp = sub.add_parser("ship", help="the reference bundle from an evidence folder (its hot sides, two-sided check)")
    shp.add_argument("evidence")
    shp.add_argument("--bundle", default=None, help="default: reference/")
    shp.add_argument("--keep-hot", action="store_true",
                     help="keep the pairs' hot/ folders (by default removed once the bundle holds them: slim)")
    asm = sub.add_parser("assemble", help="the evidence folder OUT from finished pairs")
    asm.add_argument("out")
    asm.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "HOT", "COLD"), required=True,
                     help="a model and seed's hot-side and cold-side run directories")
    args = parser.parse_args(argv)
    if args.command == "run":
        status = run(args.root, args.pairs, args.streams, sides=args.sides)
        return int(any(status.values()))
    if args.command == "ship":
        record = ship(args.evidence, args.bundle)
        print(json.dumps({k: record[k] for k in ("config_hash", "code_commit", "two_sided")}, indent=1))
        if not args.keep_hot:
            print("hot sides now only in the bundle:", ", ".join(slim(args.evidence, args.bundle)) or "none")
        return 0
    summary = assemble(args.out, {name: (hot, cold) for name, hot, cold in args.pair})
    print(json.dumps(summary["cost"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
