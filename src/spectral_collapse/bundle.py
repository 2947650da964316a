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
# Kept by a new export: the random-start scan tables the warm-start chain is validated against (issue 19;
# analysis.start_check writes the validation tables after an export).
KEEP = ("random_start",)
PROVENANCE_KEYS = ("config_hash", "code_commit", "data_sha256", "package_versions", "machine", "jobs", "exported")


def _cached_files(config: Mapping[str, Any], root: str | os.PathLike) -> list[str]:
    from .redraw import cached_inputs
    from .storepath import store_paths

    return sorted(cached_inputs(_models(config), store_paths(config["store"], root).report))


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
    recorded config, compared through ``redraw.training_fingerprint``); a preset that drops a model ships the
    rest of the run."""
    run_dir, bundle = Path(run_dir), Path(bundle)
    config = _run_config(run_dir, configfiles)
    models = _models(config)
    _check_run(run_dir, config, models, configfiles)
    if bundle.exists():  # a fresh bundle, except the committed comparison data it is checked against
        for old in bundle.iterdir():
            if old.name not in KEEP:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    (bundle / "results").mkdir(parents=True)
    for rel in _cached_files(config, run_dir):
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
        "configfiles": list(configfiles),
        "code_commit": _git(run_dir, "rev-parse", "HEAD"),
        "code_dirty": bool(_git(run_dir, "status", "--porcelain", "--untracked-files=no")),
        "data_sha256": verified["files"],
        "package_versions": package_versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": _cpu_name()},
        "jobs": _job_times(run_dir, models),
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
    from .redraw import training_fingerprint

    summary = json.loads((run_dir / "results/summary.json").read_text())
    if summary.get("config_hash") != config_hash(config):
        raise ValueError(f"{run_dir}/results/summary.json was made with another config (hash "
                         f"{summary.get('config_hash')}) than config.yaml + {list(configfiles)} "
                         f"({config_hash(config)}): pass the --configfile presets the run used")
    for rel, payload in _shipped_runs(run_dir, models):
        model = rel.split("/")[0]
        if training_fingerprint(validate_config(payload["config"]), model) != training_fingerprint(config, model):
            raise ValueError(f"results/runs/{rel}/run.json was trained or measured with other settings for {model} "
                             f"than the shipped config (config.yaml + {list(configfiles)})")


def _shipped_runs(run_dir: Path, models: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(run folder relative to results/runs, its run.json) of every finished job of ``models``."""
    root = run_dir / "results/runs"
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
            full = rec.get("ms_per_step_all_members")  # measured by the job (callbacks.StepTimer)
            job.update(points=len(members), updates=rec["updates"], point_updates=rec["point_updates"],
                       point_updates_unfrozen=rec["point_updates_unfrozen"],
                       converged=sum(m["status"] == "converged" for m in members),
                       ms_per_step=rec["ms_per_step"], job_time_s=rec.get("job_time_s"),
                       ms_per_step_all_members=full, chain=rec.get("chain"),
                       wall_s_unfrozen_estimate=None if full is None else full * rec["updates"] / 1e3)
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
    shipped = yaml.safe_load((bundle / "config.yaml").read_text())  # the run's config, validated when it ran
    config = validate_config(shipped)
    missing = [rel for rel in _cached_files(config, bundle) if not (bundle / rel).is_file()]
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
    for rel in ["results/summary.json", *(str(p.relative_to(bundle)) for p in bundle.glob("results/analysis/*/analysis.json"))]:
        (workdir / rel).unlink()  # recomputed by the redraw, from the scan tables
    shutil.copyfile(bundle / "config.yaml", workdir / "config.yaml")
    return workdir


PAPER_D_EFF = {"pca": [6, 9, 10, 12, 15, 17], "vae": [2, 5, 5, 8, 14, None]}  # Table I at eps = 5% ... 0.001%
# The paper's nonlinear (mlp-d4) claims on the WorldClim test split (docs/science.md section 4; issue 13).
PAPER = {"identity_r2": "~0.98", "rank_agreement": "13", "kendall_tau": "-", "powerlaw": "~4 (ranks 4-17)",
         "crossover": "~4", "meanfield": "-", "ablation": "(claim: M^2 ranks latents by usefulness)"}
HEAD_K = 4  # the depth comparison: D~ after the first HEAD_K ranks (the head) and the floor of D~_K


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else (format(v, spec) if isinstance(v, float) else str(v))


def _seeds(m: Mapping[str, Any], key: str, spec: str) -> str:
    """Per-seed values of a headline scalar ("a / b"), from seed_spread (older summaries: only with >= 2 seeds)."""
    spread = m.get("seed_spread", {}).get(key)
    if not spread:
        return "-"
    return " / ".join(_fmt(None if v is None else float(v), spec) for _, v in sorted(spread["per_seed"].items()))


def _pooled_and_seeds(m: Mapping[str, Any], value: Any, key: str, spec: str) -> str:
    """The pooled number, and the per-seed numbers where the model has several seeds (issue 17, item 4)."""
    text = _fmt(value, spec)
    return f"{text} (seeds {_seeds(m, key, spec)})" if len(m.get("seeds", [])) > 1 else text


def _meanfield_cell(mf: Mapping[str, Any]) -> str:
    if mf.get("status", "resolved") != "resolved" or mf.get("exponent") is None:
        return "not resolved"
    ci = mf.get("ci95") or [None, None]
    return f"{_fmt(mf['exponent'], '.2f')} (95% CI {_fmt(ci[0], '.2f')}-{_fmt(ci[1], '.2f')}; {mf['n_groups']} ranks)"


def _headline(m: Mapping[str, Any]) -> dict[str, str]:
    pl, cx, mf = m["powerlaw"]["model"], m["powerlaw"].get("crossover", {}), m["meanfield"]
    ci = m.get("identity_r2_ci95") or [None, None]
    res = m.get("thresholds_resolved", {})
    ab = m.get("ablation_order", {})
    splits = m.get("splits", {})
    held = m["powerlaw"].get("pca_heldout", {})
    return {
        "splits": (f"thresholds: {splits.get('thresholds', m.get('split'))}"
                   + (" (fallback: no train split)" if splits.get("thresholds_note") else "")
                   + f"; utilities: {splits.get('utilities', m.get('split'))}"),
        "resolved": f"{res.get('n_resolved', m['identity_r2_ranks'])} ({res.get('n_unresolved', 0)} unresolved)",
        "identity_r2": (f"{_pooled_and_seeds(m, m['identity_r2'], 'identity_r2', '.3f')}, 95% CI "
                        f"{_fmt(ci[0], '.2f')}-{_fmt(ci[1], '.2f')} ({m['identity_r2_ranks']} ranks)"),
        "identity_r2_head_tail": (f"{_fmt(m.get('identity_r2_head'))} / {_fmt(m.get('identity_r2_tail'))} "
                                  f"({m.get('identity_r2_head_ranks', '-')} / {m.get('identity_r2_tail_ranks', '-')} ranks)"),
        "rank_agreement": (f"{_pooled_and_seeds(m, m['rank_agreement'], 'rank_agreement', '.0f')} "
                           f"of {m['rank_agreement_ranks']}"),
        "kendall_tau": f"{_pooled_and_seeds(m, m['kendall_tau'], 'kendall_tau', '.2f')} ({m['rank_inversions']} inversions)",
        "ablation": ("not measured" if ab.get("status", "not measured").startswith("not measured") else
                     f"{_fmt(ab['pooled']['mean'], '.2f')} (min {_fmt(ab['pooled']['min'], '.2f')}, "
                     f"{ab['pooled']['n_models']} models)"),
        "powerlaw": f"{_pooled_and_seeds(m, pl['exponent'], 'powerlaw_exponent', '.2f')}"
                    + (f", 95% CI {_fmt(pl['ci95'][0], '.2f')}-{_fmt(pl['ci95'][1], '.2f')}" if pl.get("ci95") else "")
                    + f" (ranks {pl['ranks'][0]}-"
                    f"{pl['ranks'][1]}; PCA train {_fmt(m['powerlaw']['pca']['exponent'], '.2f')}, PCA test "
                    f"{_fmt(held.get('exponent'), '.2f')})",
        "crossover": (f"{cx['K']} (head {_fmt(cx['head_exponent'], '.2f')}, tail {_fmt(cx['tail_exponent'], '.2f')}; "
                      f"PCA {m['powerlaw'].get('pca_crossover', {}).get('K')})") if cx.get("K") else "-",
        "meanfield": _meanfield_cell(mf),
    }


def _per_seed_values(m: Mapping[str, Any], key: str) -> dict[str, Any]:
    spread = m.get("seed_spread", {}).get(key)
    return dict(spread["per_seed"]) if spread else {}


def _paper_comparisons(models: Mapping[str, Any], names: list[str], eps: list[float]) -> list[str]:
    """Claims that compare models or compare with the paper's table, judged seed by seed (`claims.verdict`)."""
    from .analysis.claims import verdict

    out = ["", "| claim (judged seed by seed) | evidence, per seed | verdict |", "| --- | --- | --- |"]
    mlps = sorted((models[n]["depth"], n) for n in names if models[n].get("family") == "mlp")
    for (d_lo, lo), (d_hi, hi) in zip(mlps, mlps[1:]):
        ref = models[lo]["best_D"][HEAD_K - 1]
        vals = _per_seed_values(models[hi], "best_D_head") or {"pooled": models[hi]["best_D"][HEAD_K - 1]}
        ev = ", ".join(f"seed {s}: {_fmt(v, '.3g')}" for s, v in sorted(vals.items()))
        out.append(f"| depth puts more utility in the head: D~ after {HEAD_K} ranks of {hi} below {lo}'s "
                   f"{_fmt(ref, '.3g')} | {ev} | {verdict(vals, lambda v: v < ref)} |")
    for n in names:
        if models[n].get("family") != "mlp":
            continue
        for e, paper in zip(eps, PAPER_D_EFF["vae"]):
            if paper is None:
                continue
            vals = _per_seed_values(models[n], f"d_eff_{e:g}") or {"pooled": models[n]["d_eff"]["model"][eps.index(e)]}
            ev = ", ".join(f"seed {s}: {_fmt(v, '.0f')}" for s, v in sorted(vals.items()))
            out.append(f"| {n}: d_eff at {100 * e:g}% equals the paper's VAE ({paper}) | {ev} | "
                       f"{verdict({s: (v if v is not None else -1) for s, v in vals.items()}, lambda v: v == paper)} |")
    return out


def report(bundle: str | os.PathLike = BUNDLE) -> str:
    """The README's tables of the reference run, from the shipped summary and provenance (Markdown): every
    number in them is read here from the bundle, none typed by hand. Pooled numbers come with the per-seed
    ones; claims are judged seed by seed (issue 17)."""
    bundle = Path(bundle)
    summary = json.loads((bundle / "results/summary.json").read_text())
    jobs = json.loads((bundle / "provenance.json").read_text())["jobs"]
    models = summary["models"]
    names = list(models)
    rows = {"splits": "split of the numbers",
            "resolved": "resolved thresholds (>= 3 window points, active and collapsed)",
            "identity_r2": "identity R^2 of log dD~_k vs log T_c,k, pooled (seeds)",
            "identity_r2_head_tail": "identity R^2, head (ranks 1-6) / tail",
            "rank_agreement": "rank agreement: consecutive leading ranks, pooled (seeds)",
            "kendall_tau": "Kendall's tau of the two orders, pooled (seeds)",
            "ablation": "Kendall's tau of M^2 and single-latent ablation utility",
            "powerlaw": "power law D~_K ~ K^-p: exponent p",
            "crossover": "head/tail crossover K",
            "meanfield": "mean-field exponent (1 for the linear law)"}
    heads = {n: _headline(models[n]) for n in names}
    out = ["| quantity | paper, nonlinear VAE | " + " | ".join(names) + " |",
           "| --- | --- |" + " --- |" * len(names)]
    out += [f"| {label} | {PAPER.get(key, '-')} | " + " | ".join(heads[n][key] for n in names) + " |"
            for key, label in rows.items()]

    eps = models[names[0]]["d_eff"]["eps"]
    first = models[names[0]]["d_eff"]
    out += ["", "| d_eff at eps (share of V) | " + " | ".join(f"{100 * e:g}%" for e in eps) + " |",
            "| --- |" + " --- |" * len(eps),
            "| PCA, paper | " + " | ".join(_fmt(v) for v in PAPER_D_EFF["pca"]) + " |",
            "| PCA, this data (training split) | " + " | ".join(_fmt(v, ".0f") for v in first["pca"]) + " |"]
    if first.get("pca_heldout"):
        out.append("| PCA, this data (test split, training eigenvectors) | "
                   + " | ".join(_fmt(v, ".0f") for v in first["pca_heldout"]) + " |")
    out.append("| VAE, paper | " + " | ".join(_fmt(v) for v in PAPER_D_EFF["vae"]) + " |")
    for n in names:
        m = models[n]
        out.append(f"| {n}{', pooled' if len(m['seeds']) > 1 else ''} | "
                   + " | ".join(_fmt(v, ".0f") for v in m["d_eff"]["model"]) + " |")
        if len(m["seeds"]) > 1:
            for seed in m["seeds"]:
                vals = [m.get("seed_spread", {}).get(f"d_eff_{e:g}", {}).get("per_seed", {}).get(str(seed))
                        for e in eps]
                out.append(f"| {n}, seed {seed} | " + " | ".join(_fmt(v, ".0f") for v in vals) + " |")

    out += ["", f"| depth and seeds | D~ after the first {HEAD_K} ranks, pooled (seeds) | floor: lowest D~_K "
                "| resolved thresholds, pooled (seeds) | identity R^2 per seed | rank agreement per seed "
                "| power-law exponent per seed |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for n in names:
        m = models[n]
        best = [v for v in m["best_D"] if v is not None]
        out.append(f"| {n} | {_pooled_and_seeds(m, m['best_D'][HEAD_K - 1], 'best_D_head', '.3g')} | "
                   f"{_fmt(min(best) if best else None, '.3g')} | "
                   f"{_pooled_and_seeds(m, sum(s == 'fitted' for s in m['threshold_status']), 'n_resolved', '.0f')} | "
                   f"{_seeds(m, 'identity_r2', '.3f')} | {_seeds(m, 'rank_agreement', '.0f')} | "
                   f"{_seeds(m, 'powerlaw_exponent', '.2f')} |")

    claims = sorted({c for n in names for c in models[n].get("claims", {})})
    if claims:
        out += ["", "| claim (judged seed by seed) | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        for c in claims:
            cells = []
            for n in names:
                v = models[n].get("claims", {}).get(c)
                cells.append("-" if v is None else f"{v['verdict']} ({v['n_seeds']} seed{'s' if v['n_seeds'] > 1 else ''})")
            out.append(f"| {c} | " + " | ".join(cells) + " |")

    out += _paper_comparisons(models, names, eps)

    if any("drift_sensitivity" in models[n] for n in names):
        out += ["", "| model | drift limit | points at equilibrium | resolved thresholds (seeds) | identity R^2 (seeds) "
                    "| rank agreement (seeds) | D~ after 4 ranks (seeds) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for n in names:
            for limit, v in models[n].get("drift_sensitivity", {}).items():
                if not v.get("equilibrium"):
                    out.append(f"| {n} | {limit} | 0 | - | - | - | - |")
                    continue
                cell = lambda key, spec: (_fmt(v[key]["pooled"], spec) + " (" + " / ".join(  # noqa: E731
                    _fmt(x, spec) for _, x in sorted(v[key]["per_seed"].items())) + ")")
                out.append(f"| {n} | {limit} | {v['equilibrium']} | {cell('n_resolved', '.0f')} | "
                           f"{cell('identity_r2', '.3f')} | {cell('rank_agreement', '.0f')} | {cell('best_D_head', '.3g')} |")

    out += ["", "| model | points (seeds x T) | at equilibrium | removed: loss rule / drift / stability "
                "| converged, M^2 still drifting (T, seed) | not converged: budget spent (T, seed) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for n in names:
        r = models[n]["runs"]
        drift = ", ".join(f"{p['T']:.2g} s{p['seed']}" for p in r.get("drifting_points", [])) or "none"
        unconv = ", ".join(f"{p['T']:.2g} s{p['seed']}" for p in r["unconverged_points"]) or "none"
        rb = r.get("removed_by")
        removed = (f"{rb['loss_rule']} / {rb['drift']} / "
                   + (str(rb["stability"]) if r.get("stability_checked") else "not checked")) if rb else "-"
        out.append(f"| {n} | {r['total']} | {r.get('equilibrium', r['converged'])} | {removed} | {drift} | {unconv} |")

    out += ["", "| job | points | converged | updates | point-updates computed (without freezing) "
                "| wall s | wall s without freezing (estimate) | CPU s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for job in jobs:
        seed = job["seed"].removeprefix("seed")
        if job["rule"] == "train":
            est = job.get("wall_s_unfrozen_estimate")
            out.append(f"| train {job['model']} seed {seed} | {job['points']} | {job['converged']} | {job['updates']:,} | "
                       f"{job['point_updates']:,} ({job['point_updates_unfrozen']:,}; "
                       f"{1 - job['point_updates'] / job['point_updates_unfrozen']:.0%} saved) | {job['wall_s']:.0f} | "
                       f"{_fmt(est, '.0f')} | {job['cpu_s']:.0f} |")
        else:
            out.append(f"| measure {job['model']} seed {seed} | | | | | {job['wall_s']:.0f} | | {job['cpu_s']:.0f} |")
    out += _cost_table(jobs)
    return "\n".join(out)


COLD_T = 1e-4  # the cold end of the cost table: points at T <= 1e-4


def _cost_table(jobs: list[Mapping[str, Any]]) -> list[str]:
    """Issue 19's cost table: per model and seed, the CPU seconds of training and measurement, the updates per
    point (median, largest and where), the cold end's share of the updates, and the CPU seconds per point; then
    the whole run in core-hours. Empty for a bundle without warm-start chains."""
    chains = [j for j in jobs if j["rule"] == "train" and j.get("chain")]
    if not chains:
        return []
    measure = {(j["model"], j["seed"]): j for j in jobs if j["rule"] == "measure"}
    out = ["", "| model, seed | points | updates, all points | updates per point: median / largest (T) "
               f"| share of updates at T <= {COLD_T:g} | train CPU s | measure CPU s | CPU s per point |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for job in chains:
        ups = [int(c["updates"]) for c in job["chain"]]
        Ts = [float(c["T"]) for c in job["chain"]]
        worst = max(range(len(ups)), key=ups.__getitem__)
        cold = sum(u for u, T in zip(ups, Ts) if T <= COLD_T) / max(sum(ups), 1)
        meas = measure.get((job["model"], job["seed"]), {}).get("cpu_s", 0.0)
        median = sorted(ups)[len(ups) // 2]
        out.append(f"| {job['model']}, seed {job['seed'].removeprefix('seed')} | {len(ups)} | {sum(ups):,} | "
                   f"{median:,} / {ups[worst]:,} ({Ts[worst]:.2g}) | {cold:.0%} | {job['cpu_s']:.0f} | {meas:.0f} | "
                   f"{(job['cpu_s'] + meas) / len(ups):.0f} |")
    train_s = sum(j["cpu_s"] for j in jobs if j["rule"] == "train")
    meas_s = sum(j["cpu_s"] for j in jobs if j["rule"] == "measure")
    wall = sum(j["wall_s"] for j in jobs)
    out += ["", f"The run: {train_s + meas_s:,.0f} CPU s = {(train_s + meas_s) / 3600:.2f} core-hours (training "
                f"{train_s / 3600:.2f}, measurement with the stability check {meas_s / 3600:.2f}); "
                f"{wall / 3600:.2f} h of one-core wall time summed over its jobs."]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spectral_collapse.bundle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write reference/ from a finished run")
    exp.add_argument("run_dir")
    exp.add_argument("--configfile", nargs="*", default=[], help="the presets the run used (relative to RUN_DIR)")
    sub.add_parser("prepare", help="a working directory to redraw the bundle in").add_argument("workdir")
    sub.add_parser("check", help="sizes and provenance of reference/")
    sub.add_parser("report", help="the README's tables of the reference run (Markdown)")
    args = parser.parse_args(argv)
    if args.command == "export":
        record = export(args.run_dir, configfiles=args.configfile)
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
