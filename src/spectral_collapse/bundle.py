"""The reference bundle: a converged reference run's cached tables and summaries, shipped in the repository
(``reference/``) so that its figures and summary regenerate on a fresh clone, without the rasters and without
training (``make reference-figures``).

What it holds (the layout of a workflow's working directory, so the workflow itself redraws from it):

- ``results/``: exactly the cached inputs of the redraw workflow (``spectral_collapse.redraw``, workflow/Redraw.smk): per model the
  scan tables (``scan_latents``, ``scan_pruning``, ``scan_runs``), the latent correlations and the latent maps
  (block means of 6 x 6 cells, 1 degree, gzipped as ``latent_maps.nc.gz``, to keep the bundle small; ``prepare``
  unpacks them), the PCA table, the data records; plus the
  reference run's own ``summary.json`` and per-model ``analysis.json`` as they were exported;
- ``config.yaml``: the run's whole config (config.yaml with its preset merged, validated);
- ``provenance.json``: config hash, the code commit of the run, the 19 data SHA-256 sums, package versions,
  the machine, and every training and measurement job's wall and CPU time with its updates (the saving from
  freezing converged members: computed point-updates against the same jobs with no member frozen).

``python -m spectral_collapse.bundle export RUN_DIR`` writes it from a finished run; ``prepare WORKDIR`` sets up
a working directory to redraw in; ``check`` verifies sizes and provenance. The README's tables are printed from
the bundle by the docs generator ``docs/tables.py`` (``make reference-tables``), not by the library.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import yaml

from .config import REPO_ROOT, validate_config
from .paths import ANALYSIS_ROOT, BENCHMARKS_ROOT, RUNS_ROOT, SUMMARY, VERIFIED
from .provenance import atomic_path, config_hash, package_versions, write_json

BUNDLE = REPO_ROOT / "reference"
MAX_BYTES = 10 * 10**6  # the whole bundle
MAX_FILE_BYTES = 2 * 2**20  # any one file
MAP_COARSEN = 6  # 10' cells -> 1 degree
MAPS = "latent_maps.nc"  # a model's maps, the one cached input the bundle holds packed:
PACKED = ".gz"  # gzipped, the ocean's NaNs make 1.04 MB 0.39 MB (NetCDF3 through scipy has no compression)
# Kept by a new export: the random-start scan tables a re-run is validated against, the warm-start chain
# re-run, the cold-end pilots and the runs from both sides kept as evidence (reference/chain_rerun/README.md,
# reference/cold_end/README.md, reference/two_sided_run/README.md, reference/two_sided_encoder/README.md)
# (issue 19; analysis.start_check writes the validation tables after an export).
KEEP = ("random_start", "chain_rerun", "cold_end", "two_sided_run", "two_sided_encoder")
PROVENANCE_KEYS = ("config_hash", "code_commit", "data_sha256", "package_versions", "machine", "jobs", "exported")


def _cached_files(config: Mapping[str, Any], root: str | os.PathLike) -> list[str]:
    from .redraw import cached_inputs
    from .storepath import store_paths

    paths = store_paths(config["store"], root, data=config["data"])
    return sorted(cached_inputs(_models(config), paths.description, paths.verified))


def _models(config: Mapping[str, Any]) -> list[str]:
    from .scan import model_specs

    return [spec.model_id for spec in model_specs(config)]


def export(run_dir: str | os.PathLike, bundle: str | os.PathLike = BUNDLE,
           configfiles: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Write the bundle of the finished run in ``run_dir`` (a workflow working directory: config.yaml and
    results/) to ``bundle``; return the provenance.

    ``configfiles``: the ``--configfile`` presets the run used (paths relative to ``run_dir``), merged over its
    config.yaml: the shipped config. It must be the config results/summary.json was made with (same hash), and
    every shipped job must have trained and measured with this config's settings for its model (its run.json's
    recorded config, compared through ``staleness.job_identity``); a preset that drops a model ships the
    rest of the run."""
    run_dir, bundle = Path(run_dir), Path(bundle)
    config = _run_config(run_dir, configfiles)
    if config["data"]["source"] != "worldclim":
        raise ValueError(f"{run_dir}: a {config['data']['source']} source's run; the reference bundle is the "
                         "WorldClim 2.1 study's (its provenance pins the 19 WorldClim checksums)")
    models = _models(config)
    _check_run(run_dir, config, models, configfiles)
    clear_bundle(bundle)
    (bundle / "results").mkdir(parents=True)
    for rel in _cached_files(config, run_dir):
        src, dst = run_dir / rel, bundle / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(MAPS):
            with tempfile.TemporaryDirectory(prefix="maps-") as tmp:
                _coarsen_maps(src, Path(tmp) / MAPS)
                pack(Path(tmp) / MAPS, Path(f"{dst}{PACKED}"))
        else:
            shutil.copyfile(src, dst)
    for rel in [SUMMARY, *(f"{ANALYSIS_ROOT}/{m}/analysis.json" for m in models)]:
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / rel, bundle / rel)
    (bundle / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    verified = json.loads((run_dir / VERIFIED).read_text())
    record = {
        "config_hash": config_hash(config),
        "configfiles": list(configfiles),
        "code_commit": _git(run_dir, "rev-parse", "HEAD"),
        "code_dirty": bool(_git(run_dir, "status", "--porcelain", "--untracked-files=no")),
        "data_sha256": verified["files"],
        "package_versions": package_versions(),
        "machine": machine_record(),
        "jobs": job_times(run_dir, models),
        # the config hash each job ran under: jobs of one run may differ in what they do not share (e.g. another
        # model's settings, changed between them)
        "job_configs": {rel: payload.get("config_hash") for rel, payload in _shipped_runs(run_dir, models)},
        "exported": "python -m spectral_collapse.bundle export RUN_DIR --configfile PRESET ... (from the run's "
                    "working directory)",
    }
    write_json(bundle / "provenance.json", record)
    problems = check(bundle)
    if problems:
        raise RuntimeError("the bundle is not valid:\n" + "\n".join(problems))
    return record


def _run_config(run_dir: Path, configfiles: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The run's config: its config.yaml with the presets merged over it, validated (as the Snakefile does)."""
    from .config import merge

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    for name in configfiles:
        config = merge(config, yaml.safe_load((run_dir / name).read_text()) or {})
    return validate_config(config)


def _check_run(run_dir: Path, config: Mapping[str, Any], models: list[str], configfiles) -> None:
    """The shipped config is the one the run's summary and every shipped job were made with (see export)."""
    from .staleness import job_identity

    summary = json.loads((run_dir / SUMMARY).read_text())
    if summary.get("config_hash") != config_hash(config):
        raise ValueError(f"{run_dir}/results/summary.json was made with another config (hash "
                         f"{summary.get('config_hash')}) than config.yaml + {list(configfiles)} "
                         f"({config_hash(config)}): pass the --configfile presets the run used")
    for rel, payload in _shipped_runs(run_dir, models):
        model = rel.split("/")[0]
        if job_identity(validate_config(payload["config"]), model) != job_identity(config, model):
            raise ValueError(f"{RUNS_ROOT}/{rel}/run.json was trained or measured with other settings for {model} "
                             f"than the shipped config (config.yaml + {list(configfiles)})")


def _shipped_runs(run_dir: Path, models: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(run folder relative to results/runs, its run.json) of every finished job of ``models``."""
    root = run_dir / RUNS_ROOT
    runs = sorted(root.rglob("run.json"))
    return [(str(p.parent.relative_to(root)), json.loads(p.read_text())) for p in runs
            if p.parent.relative_to(root).parts[0] in models]


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


def job_times(run_dir: Path, models: list[str]) -> list[dict[str, Any]]:
    """Every training and measurement job of ``models``: wall and CPU seconds (Snakemake's benchmark), and for
    training the updates, the point-updates computed and those the job would have computed with no member
    frozen."""
    import pandas as pd

    jobs = []
    for tsv in sorted((run_dir / BENCHMARKS_ROOT).glob("*/*/*/*.tsv")):
        rule, model, group, seed = tsv.parts[-4], tsv.parts[-3], tsv.parts[-2], tsv.stem
        if rule not in ("train", "measure") or model not in models:
            continue
        bench = pd.read_csv(tsv, sep="\t").iloc[-1]
        job = {"rule": rule, "model": model, "group": group, "seed": seed, "wall_s": float(bench["s"]),
               "cpu_s": float(bench["cpu_time"]), "max_rss_mb": float(bench["max_rss"])}
        if rule == "train":
            rec = json.loads((run_dir / RUNS_ROOT / model / group / seed / "train.json").read_text())
            members = rec["members"]
            full = rec.get("ms_per_step_all_members")  # measured by the job (callbacks.StepTimer)
            job.update(points=len(members), updates=rec["updates"], point_updates=rec["point_updates"],
                       point_updates_unfrozen=rec["point_updates_unfrozen"],
                       converged=sum(m["status"] == "converged" for m in members),
                       ms_per_step=rec["ms_per_step"], job_time_s=rec.get("job_time_s"),
                       ms_per_step_all_members=full, chain=rec.get("chain"),
                       wall_s_unfrozen_estimate=None if full is None else full * rec["updates"] / 1e3)
        jobs.append(job)
    return jobs


def pack(src: Path, dst: Path) -> None:
    """gzip ``src`` to ``dst``, atomically, with no timestamp in the header (one content, one file)."""
    with atomic_path(dst) as tmp, open(src, "rb") as raw, gzip.GzipFile(tmp, "wb", mtime=0) as packed:
        shutil.copyfileobj(raw, packed)


def unpack(src: Path, dst: Path) -> None:
    """The file ``pack`` packed, written to ``dst`` atomically."""
    with atomic_path(dst) as tmp, gzip.open(src, "rb") as packed, open(tmp, "wb") as raw:
        shutil.copyfileobj(packed, raw)


def clear_bundle(bundle: Path) -> None:
    """Empty ``bundle`` for a fresh export, except the committed evidence folders (``KEEP``) it is checked
    against."""
    if bundle.exists():
        for old in bundle.iterdir():
            if old.name not in KEEP:
                shutil.rmtree(old) if old.is_dir() else old.unlink()


def machine_record() -> dict[str, Any]:
    """The machine a bundle is exported on, as its provenance records it."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": _cpu_name()}


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
    shipped = yaml.safe_load((bundle / "config.yaml").read_text())  # the run's config, validated when it ran
    config = validate_config(shipped)
    missing = [rel for rel in _cached_files(config, bundle)
               if not (bundle / rel).is_file() and not (rel.endswith(MAPS) and (bundle / f"{rel}{PACKED}").is_file())]
    problems += [f"missing cached input {rel}" for rel in missing]
    record = json.loads((bundle / "provenance.json").read_text())
    problems += [f"provenance.json lacks {key}" for key in PROVENANCE_KEYS if key not in record]
    # The hash of the config as shipped: validating it again under a later schema adds the later defaults (keys
    # the run never had), which changes the hash without the config having changed.
    if record.get("config_hash") != config_hash(shipped):
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
    for packed in (workdir / "results").rglob(f"{MAPS}{PACKED}"):
        unpack(packed, packed.with_name(MAPS))
        packed.unlink()
    for rel in [SUMMARY, *(str(p.relative_to(bundle)) for p in bundle.glob(f"{ANALYSIS_ROOT}/*/analysis.json"))]:
        (workdir / rel).unlink()  # recomputed by the redraw, from the scan tables
    shutil.copyfile(bundle / "config.yaml", workdir / "config.yaml")
    return workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spectral_collapse.bundle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write reference/ from a finished run")
    exp.add_argument("run_dir")
    exp.add_argument("--configfile", nargs="*", default=[], help="the presets the run used (relative to RUN_DIR)")
    sub.add_parser("prepare", help="a working directory to redraw the bundle in").add_argument("workdir")
    sub.add_parser("check", help="sizes and provenance of reference/")
    args = parser.parse_args(argv)
    if args.command == "export":
        record = export(args.run_dir, configfiles=args.configfile)
        print(f"wrote {BUNDLE} (config {record['config_hash']}, commit {record['code_commit']})")
    elif args.command == "prepare":
        print(f"prepared {prepare(args.workdir)}")
    else:
        problems = check()
        print("\n".join(problems) or f"{BUNDLE}: sizes and provenance OK")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
