"""The reference bundle: a converged reference run's cached tables and summaries, shipped in the repository
(``reference/``) so that its figures and summary regenerate on a fresh clone, without the rasters and without
training (``make reference-figures``).

What it holds (the layout of a workflow's working directory, so the workflow itself redraws from it):

- ``results/``: exactly the cached inputs of a redraw-only run (``spectral_collapse.redraw``): per model the
  scan tables (``scan_latents``, ``scan_pruning``, ``scan_runs``), the latent correlations and the latent maps
  (block means of 6 x 6 cells, 1 degree, to keep the bundle small), the PCA table, the data records; plus the
  reference run's own ``summary.json`` and per-model ``analysis.json`` as they were exported;
- ``config.yaml``: the run's whole config (config.yaml with its preset merged, validated);
- ``provenance.json``: config hash, the code commit of the run, the 19 data SHA-256 sums, package versions,
  the machine, and every training and measurement job's wall and CPU time with its updates (the saving from
  freezing converged members: computed point-updates against the same jobs with no member frozen).

``python -m spectral_collapse.bundle export RUN_DIR`` writes it from a finished run; ``prepare WORKDIR`` sets up
a working directory to redraw in; ``check`` verifies sizes and provenance; ``report`` prints the README's tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import yaml

from .config import REPO_ROOT, validate_config
from .provenance import config_hash, package_versions, write_json

BUNDLE = REPO_ROOT / "reference"
MAX_BYTES = 10 * 10**6  # the whole bundle
MAX_FILE_BYTES = 2 * 2**20  # any one file
MAP_COARSEN = 6  # 10' cells -> 1 degree
PROVENANCE_KEYS = ("config_hash", "code_commit", "data_sha256", "package_versions", "machine", "jobs", "exported")


def _cached_files(models: list[str]) -> list[str]:
    from .redraw import cached_inputs

    return sorted(cached_inputs(models))


def _models(config: Mapping[str, Any]) -> list[str]:
    from .scan import model_specs

    return [spec.model_id for spec in model_specs(config)]


def export(run_dir: str | os.PathLike, bundle: str | os.PathLike = BUNDLE,
           override: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write the bundle of the finished run in ``run_dir`` (a workflow working directory: config.yaml,
    results/, and the --configfile preset recorded in every run.json) to ``bundle``; return the provenance.

    ``override``: a YAML file merged over the run's config, to ship part of a run (e.g. a model whose jobs did
    not finish left out: ``models: {mlp: {depths: [4]}}``); recorded in the provenance with its comments."""
    from .config import merge

    run_dir, bundle = Path(run_dir), Path(bundle)
    config = _run_config(run_dir)
    override_text = Path(override).read_text() if override else None
    if override_text:
        config = validate_config(merge(config, yaml.safe_load(override_text) or {}))
    models = _models(config)
    if bundle.exists():
        shutil.rmtree(bundle)
    (bundle / "results").mkdir(parents=True)
    for rel in _cached_files(models):
        src, dst = run_dir / rel, bundle / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("latent_maps.nc"):
            _coarsen_maps(src, dst)
        else:
            shutil.copyfile(src, dst)
    for rel in ["results/summary.json", *(f"results/analysis/{m}/analysis.json" for m in models)]:
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / rel, bundle / rel)
    (bundle / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    verified = json.loads((run_dir / "results/data/worldclim_verified.json").read_text())
    record = {
        "config_hash": config_hash(config),
        "code_commit": _git(run_dir, "rev-parse", "HEAD"),
        "code_dirty": bool(_git(run_dir, "status", "--porcelain", "--untracked-files=no")),
        "data_sha256": verified["files"],
        "package_versions": package_versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": _cpu_name()},
        "jobs": _job_times(run_dir, models),
        "exported": "python -m spectral_collapse.bundle export (from the run's working directory)",
    }
    if override_text:
        record["config_override"] = override_text
    write_json(bundle / "provenance.json", record)
    problems = check(bundle)
    if problems:
        raise RuntimeError("the bundle is not valid:\n" + "\n".join(problems))
    return record


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run's whole config, from any of its run.json files (every run.json records it)."""
    run = next((run_dir / "results/runs").rglob("run.json"))
    return validate_config(json.loads(run.read_text())["config"])


def _coarsen_maps(src: Path, dst: Path) -> None:
    import xarray as xr

    from .analysis.maps import write_netcdf

    with xr.open_dataset(src, engine="scipy") as ds:
        coarse = ds.load().coarsen(lat=MAP_COARSEN, lon=MAP_COARSEN, boundary="trim").mean()
        for name in ("latent", "M2"):
            coarse = coarse.assign_coords({name: ds[name]})
        coarse.attrs = {**ds.attrs, "coarsened": f"means of {MAP_COARSEN} x {MAP_COARSEN} cells (land cells only)"}
        coarse["mu"].attrs = ds["mu"].attrs
        write_netcdf(coarse.astype({"mu": "float32"}), dst)


def _job_times(run_dir: Path, models: list[str]) -> list[dict[str, Any]]:
    """Every training and measurement job of ``models``: wall and CPU seconds (Snakemake's benchmark), and for
    training the updates, the point-updates computed and those the job would have computed with no member
    frozen."""
    import pandas as pd

    jobs = []
    for tsv in sorted((run_dir / "results/benchmarks").glob("*/*/*/*.tsv")):
        rule, model, group, seed = tsv.parts[-4], tsv.parts[-3], tsv.parts[-2], tsv.stem
        if rule not in ("train", "measure") or model not in models:
            continue
        bench = pd.read_csv(tsv, sep="\t").iloc[-1]
        job = {"rule": rule, "model": model, "group": group, "seed": seed, "wall_s": float(bench["s"]),
               "cpu_s": float(bench["cpu_time"]), "max_rss_mb": float(bench["max_rss"])}
        if rule == "train":
            rec = json.loads((run_dir / "results/runs" / model / group / seed / "train.json").read_text())
            members = rec["members"]
            job.update(points=len(members), updates=rec["updates"], point_updates=rec["point_updates"],
                       point_updates_unfrozen=rec["point_updates_unfrozen"],
                       converged=sum(m["status"] == "converged" for m in members),
                       ms_per_step=rec["ms_per_step"])
        jobs.append(job)
    return jobs


def _git(where: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def check(bundle: str | os.PathLike = BUNDLE) -> list[str]:
    """What is wrong with the bundle (empty when nothing): sizes, the cached inputs of every model, and the
    provenance (keys present, the config hash of the shipped config, the 19 pinned data checksums)."""
    from .worldclim import pinned_checksums

    bundle = Path(bundle)
    problems = []
    files = [p for p in bundle.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    if total > MAX_BYTES:
        problems.append(f"{bundle} holds {total / 1e6:.1f} MB (at most {MAX_BYTES / 1e6:.0f} MB)")
    problems += [f"{p} is {p.stat().st_size / 2**20:.2f} MiB (at most 2 MiB per file)" for p in files
                 if p.stat().st_size > MAX_FILE_BYTES]
    config = validate_config(yaml.safe_load((bundle / "config.yaml").read_text()))
    missing = [rel for rel in _cached_files(_models(config)) if not (bundle / rel).is_file()]
    problems += [f"missing cached input {rel}" for rel in missing]
    record = json.loads((bundle / "provenance.json").read_text())
    problems += [f"provenance.json lacks {key}" for key in PROVENANCE_KEYS if key not in record]
    if record.get("config_hash") != config_hash(config):
        problems.append("provenance.json's config_hash is not the hash of the shipped config.yaml")
    if record.get("data_sha256") != pinned_checksums():
        problems.append("provenance.json's data checksums are not the 19 pinned WorldClim 2.1 sums")
    return problems


def prepare(workdir: str | os.PathLike, bundle: str | os.PathLike = BUNDLE) -> Path:
    """A fresh working directory to redraw the bundle in: its config.yaml and cached results (earlier outputs
    of the same directory are removed, so every figure and summary is drawn anew from the bundle)."""
    workdir, bundle = Path(workdir), Path(bundle)
    if workdir.exists():
        shutil.rmtree(workdir)
    # fresh modification times: the copies are the cached inputs as of now, not older than the code
    shutil.copytree(bundle / "results", workdir / "results", copy_function=shutil.copy)
    for rel in ["results/summary.json", *(str(p.relative_to(bundle)) for p in bundle.glob("results/analysis/*/analysis.json"))]:
        (workdir / rel).unlink()  # recomputed by the redraw, from the scan tables
    shutil.copyfile(bundle / "config.yaml", workdir / "config.yaml")
    return workdir


PAPER_D_EFF = {"pca": [6, 9, 10, 12, 15, 17], "vae": [2, 5, 5, 8, 14, None]}  # Table I at eps = 5% ... 0.001%


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else (format(v, spec) if isinstance(v, float) else str(v))


def report(bundle: str | os.PathLike = BUNDLE) -> str:
    """The README's tables of the reference run, from the shipped summary and provenance (Markdown): every
    number in them is read here from the bundle, none typed by hand."""
    bundle = Path(bundle)
    summary = json.loads((bundle / "results/summary.json").read_text())
    jobs = json.loads((bundle / "provenance.json").read_text())["jobs"]
    models = summary["models"]
    out = ["| model | converged points | identity R^2 (ranks) | rank agreement (of m) | Kendall tau (inversions, ranks) "
           "| power law p, model / PCA (ranks) |", "| --- | --- | --- | --- | --- | --- |"]
    for name, m in models.items():
        pl = m["powerlaw"]
        out.append(
            f"| {name} | {m['runs']['converged']} of {m['runs']['total']} | {_fmt(m['identity_r2'])} "
            f"({m['identity_r2_ranks']}) | {m['rank_agreement']} (of {m['rank_agreement_ranks']}) | "
            f"{_fmt(m['kendall_tau'])} ({m['rank_inversions']}, {m['kendall_tau_ranks']}) | "
            f"{_fmt(pl['model']['exponent'], '.2f')} / {_fmt(pl['pca']['exponent'], '.2f')} ({pl['model']['ranks'][0]}-"
            f"{pl['model']['ranks'][1]}) |")
    eps = next(iter(models.values()))["d_eff"]["eps"]
    out += ["", "| eps (share of V) | " + " | ".join(f"{e:g}" for e in eps) + " |",
            "| --- |" + " --- |" * len(eps),
            "| PCA (this data) | " + " | ".join(_fmt(v, ".0f") for v in next(iter(models.values()))["d_eff"]["pca"]) + " |",
            "| PCA (paper) | " + " | ".join(_fmt(v) for v in PAPER_D_EFF["pca"]) + " |",
            "| VAE (paper) | " + " | ".join(_fmt(v) for v in PAPER_D_EFF["vae"]) + " |"]
    out += [f"| {name} | " + " | ".join(_fmt(v, ".0f") for v in m["d_eff"]["model"]) + " |" for name, m in models.items()]
    out += ["", "| job | points | converged | updates | point-updates (without freezing) | wall s | CPU s |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for job in jobs:
        if job["rule"] == "train":
            out.append(f"| train {job['model']} seed {job['seed'].removeprefix('seed')} | {job['points']} | "
                       f"{job['converged']} | {job['updates']} | {job['point_updates']:,} "
                       f"({job['point_updates_unfrozen']:,}) | {job['wall_s']:.0f} | {job['cpu_s']:.0f} |")
        else:
            out.append(f"| measure {job['model']} seed {job['seed'].removeprefix('seed')} | | | | | "
                       f"{job['wall_s']:.0f} | {job['cpu_s']:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spectral_collapse.bundle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write reference/ from a finished run")
    exp.add_argument("run_dir")
    exp.add_argument("--override", help="YAML merged over the run's config (ship part of the run; recorded)")
    sub.add_parser("prepare", help="a working directory to redraw the bundle in").add_argument("workdir")
    sub.add_parser("check", help="sizes and provenance of reference/")
    sub.add_parser("report", help="the README's tables of the reference run (Markdown)")
    args = parser.parse_args(argv)
    if args.command == "export":
        record = export(args.run_dir, override=args.override)
        print(f"wrote {BUNDLE} (config {record['config_hash']}, commit {record['code_commit']})")
    elif args.command == "prepare":
        print(f"prepared {prepare(args.workdir)}")
    elif args.command == "report":
        print(report())
    else:
        problems = check()
        print("\n".join(problems) or f"{BUNDLE}: sizes and provenance OK")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
