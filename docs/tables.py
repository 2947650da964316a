"""The README's and docs/results.md's tables, printed from the reference bundle (``make reference-tables``).

A docs generator, not part of the library: it reads the bundle's summary and provenance
(``spectral_collapse.bundle``) and the paper's numbers (``docs/paper_numbers.yaml``) and prints Markdown.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from spectral_collapse.analysis.model_analysis import HEAD_K
from spectral_collapse.bundle import BUNDLE
from spectral_collapse.paths import SUMMARY

_NUMBERS = yaml.safe_load((Path(__file__).with_name("paper_numbers.yaml")).read_text())
PAPER_D_EFF = _NUMBERS["d_eff"]  # Table I at eps = 5% ... 0.001%
PAPER = _NUMBERS["nonlinear"]  # the paper's nonlinear (mlp-d4) claims on the WorldClim test split


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


def _ranks(n: int) -> str:
    return f"{n} rank" + ("" if n == 1 else "s")


def _ablation_cell(ab: Mapping[str, Any]) -> str:
    """Kendall's tau of M^2 against single-latent ablation utility (analysis.json's ``ablation_order``)."""
    if ab.get("status", "not measured").startswith("not measured"):
        return "not measured"
    if not ab["pooled"]["n_models"]:
        return "not resolved (no model at equilibrium with >= 2 active latents)"
    return f"{_fmt(ab['pooled']['mean'], '.2f')} (min {_fmt(ab['pooled']['min'], '.2f')}, {ab['pooled']['n_models']} models)"


def _powerlaw_cell(m: Mapping[str, Any]) -> str:
    """The D~_K ~ K^-p exponent, pooled and per seed, with the PCA's beside it, or why it is not resolved."""
    pl, held = m["powerlaw"]["model"], m["powerlaw"].get("pca_heldout", {})
    if pl["exponent"] is None:
        return f"not resolved (the fit needs 3 resolved ranks from rank {pl['ranks'][0]} on; {pl.get('n_points', 0)} here)"
    ci = f", 95% CI {_fmt(pl['ci95'][0], '.2f')}-{_fmt(pl['ci95'][1], '.2f')}" if pl.get("ci95") else ""
    return (f"{_pooled_and_seeds(m, pl['exponent'], 'powerlaw_exponent', '.2f')}{ci} (ranks {pl['ranks'][0]}-"
            f"{pl['ranks'][1]}; PCA train {_fmt(m['powerlaw']['pca']['exponent'], '.2f')}, PCA test "
            f"{_fmt(held.get('exponent'), '.2f')})")


def _headline(m: Mapping[str, Any]) -> dict[str, str]:
    cx, mf = m["powerlaw"].get("crossover", {}), m["meanfield"]
    ci = m.get("identity_r2_ci95") or [None, None]
    res = m.get("thresholds_resolved", {})
    splits = m.get("splits", {})
    return {
        "splits": (f"thresholds: {splits.get('thresholds', m.get('split'))}"
                   + (" (fallback: no train split)" if splits.get("thresholds_note") else "")
                   + f"; utilities: {splits.get('utilities', m.get('split'))}"),
        "resolved": f"{res.get('n_resolved', m['identity_r2_ranks'])} ({res.get('n_unresolved', 0)} unresolved)",
        "identity_r2": (f"{_pooled_and_seeds(m, m['identity_r2'], 'identity_r2', '.3f')}, 95% CI "
                        f"{_fmt(ci[0], '.2f')}-{_fmt(ci[1], '.2f')} ({m['identity_r2_ranks']} ranks)")
        if m["identity_r2"] is not None else f"not resolved ({_ranks(m['identity_r2_ranks'])})",
        "identity_r2_head_tail": (f"{_fmt(m.get('identity_r2_head'))} / {_fmt(m.get('identity_r2_tail'))} "
                                  f"({m.get('identity_r2_head_ranks', '-')} / {m.get('identity_r2_tail_ranks', '-')} ranks)"),
        "rank_agreement": (f"{_pooled_and_seeds(m, m['rank_agreement'], 'rank_agreement', '.0f')} "
                           f"of {m['rank_agreement_ranks']}"),
        "kendall_tau": (f"{_pooled_and_seeds(m, m['kendall_tau'], 'kendall_tau', '.2f')} ({m['rank_inversions']} "
                        "inversions)") if m["kendall_tau"] is not None else "not resolved",
        "ablation": _ablation_cell(m.get("ablation_order", {})),
        "powerlaw": _powerlaw_cell(m),
        "crossover": (f"{cx['K']} (head {_fmt(cx['head_exponent'], '.2f')}, tail {_fmt(cx['tail_exponent'], '.2f')}; "
                      f"PCA {m['powerlaw'].get('pca_crossover', {}).get('K')})") if cx.get("K") else "-",
        "meanfield": _meanfield_cell(mf),
    }


def _per_seed_values(m: Mapping[str, Any], key: str) -> dict[str, Any]:
    spread = m.get("seed_spread", {}).get(key)
    return dict(spread["per_seed"]) if spread else {}


def _resolved_per_seed(m: Mapping[str, Any]) -> dict[str, int]:
    """Resolved thresholds per seed ({"pooled": n} too, and alone for a one-seed model), from analysis.json."""
    pooled = int(m["thresholds_resolved"]["n_resolved"])
    return {"pooled": pooled, **{s: int(v) for s, v in _per_seed_values(m, "n_resolved").items() if v is not None}}


def _paper_comparisons(models: Mapping[str, Any], names: list[str], eps: list[float]) -> list[str]:
    """Claims that compare models or compare with the paper's table, judged seed by seed (`claims.verdict`)."""
    from spectral_collapse.analysis.claims import verdict

    out = ["", "| claim (judged seed by seed) | evidence, per seed | verdict |", "| --- | --- | --- |"]
    mlps = sorted((models[n]["depth"], n) for n in names if models[n].get("family") == "mlp")
    for (d_lo, lo), (d_hi, hi) in zip(mlps, mlps[1:]):
        ref = models[lo]["best_D"][HEAD_K - 1]
        vals = _per_seed_values(models[hi], "best_D_head") or {"pooled": models[hi]["best_D"][HEAD_K - 1]}
        # D~ after HEAD_K ranks compares heads only where both models resolve that many thresholds at equilibrium
        # (a scan whose accepted points hold one active latent has a D~_4 of its one-latent state, not a head)
        resolved, lo_resolved = _resolved_per_seed(models[hi]), _resolved_per_seed(models[lo])
        judged = {s: (v if min(resolved.get(s, 0), lo_resolved.get(s, lo_resolved["pooled"])) >= HEAD_K else None)
                  for s, v in vals.items()}
        ev = ", ".join(f"seed {s}: {_fmt(v, '.3g')}" for s, v in sorted(vals.items()))
        out.append(f"| depth puts more utility in the head: D~ after {HEAD_K} ranks of {hi} below {lo}'s "
                   f"{_fmt(ref, '.3g')} | {ev} | {verdict(judged, lambda v: v < ref)} |")
    for n in names:
        if models[n].get("family") != "mlp":
            continue
        for e, paper in zip(eps, PAPER_D_EFF["vae"]):
            if paper is None:
                continue
            vals = _per_seed_values(models[n], f"d_eff_{e:g}") or {"pooled": models[n]["d_eff"]["model"][eps.index(e)]}
            ev = ", ".join(f"seed {s}: {_fmt(v, '.0f')}" for s, v in sorted(vals.items()))
            # no d_eff: D~ never fell to eps at an accepted point. With at least `paper` thresholds resolved in
            # that seed it cannot equal the paper's (fails); with fewer, the accepted points cannot say (not resolved)
            resolved = _resolved_per_seed(models[n])
            judged = {s: (v if v is not None else -1 if resolved.get(s, 0) >= paper else None) for s, v in vals.items()}
            out.append(f"| {n}: d_eff at {100 * e:g}% equals the paper's VAE ({paper}) | {ev} | "
                       f"{verdict(judged, lambda v: v == paper)} |")
    return out


def readme_tables(bundle: str | os.PathLike = BUNDLE) -> str:
    """The README's tables of the reference run, from the shipped summary and provenance (Markdown): every
    number in them is read here from the bundle, none typed by hand. Pooled numbers come with the per-seed
    ones; claims are judged seed by seed (issue 17)."""
    bundle = Path(bundle)
    summary = json.loads((bundle / SUMMARY).read_text())
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
                   + (str(rb["stability"]) if r.get("stability_checked") else "not checked")
                   + (f" / {rb['sides']} (sides)" if "sides" in rb else "")) if rb else "-"
        out.append(f"| {n} | {r['total']} | {r.get('equilibrium', r['converged'])} | {removed} | {drift} | {unconv} |")

    out += ["", "| job | points | converged | updates | point-updates computed (without freezing) "
                "| wall s | wall s without freezing (estimate) | CPU s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for job in jobs:
        # a workflow export names seeds "seed0"; a two-sided ship (two_sided_run.ship) has 0 and each job's side
        name = f"{job['model']} seed {str(job['seed']).removeprefix('seed')}" + (
            f", {job['side']} side" if job.get("side") else "")
        if job["rule"] == "train":
            est = job.get("wall_s_unfrozen_estimate")
            done, unfrozen = int(job["point_updates"]), int(job["point_updates_unfrozen"])
            out.append(f"| train {name} | {int(job['points'])} | {int(job['converged'])} | {int(job['updates']):,} | "
                       f"{done:,} ({unfrozen:,}; {1 - done / unfrozen:.0%} saved) | {job['wall_s']:.0f} | "
                       f"{_fmt(est, '.0f')} | {job['cpu_s']:.0f} |")
        else:
            out.append(f"| measure {name} | | | | | {job['wall_s']:.0f} | | {job['cpu_s']:.0f} |")
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


TWO_SIDED = BUNDLE / "two_sided_run"  # issue 19's run from both sides (spectral_collapse.two_sided_run)
TWO_SIDED_ENCODER = BUNDLE / "two_sided_encoder"  # the same with the hot side's fresh encoder (chain_reopen: encoder)


def _two_sided_point_costs(path: Path) -> list[str]:
    """Where the training time goes: per pair and side, the chain points' one-core wall seconds summed per decade
    of T (the first decade holds T = 1 as well, the last T = 1e-6), and the dearest point."""
    import math

    import pandas as pd

    points = pd.read_csv(path)
    decades = [(0.1, 1.0)] + [(10.0 ** -(k + 1), 10.0 ** -k) for k in range(1, 6)]

    def decade(T: float) -> int:
        return min(max(math.ceil(-math.log10(T) - 1e-9) - 1, 0), len(decades) - 1)

    points["decade"] = [decade(T) for T in points["T"]]
    heads = [f"{lo:.0e} to {hi:.0e}" if hi < 1 else f"{lo:g} to 1" for lo, hi in decades]
    out = ["| pair | side | training wall s by T: " + " | ".join(heads) + " | all points | dearest point (T: s) |",
           "| --- | --- | " + " | ".join("---" for _ in heads) + " | --- | --- |"]
    for (pair, side), g in points.groupby(["pair", "side"], sort=False):
        by = g.groupby("decade")["wall_s"].sum()
        dear = g.loc[g["wall_s"].idxmax()]
        cells = " | ".join(f"{by.get(k, 0.0):,.0f}" for k in range(len(decades)))
        out.append(f"| {pair} | {side} | {cells} | {g['wall_s'].sum():,.0f} | {dear['T']:.1e}: {dear['wall_s']:,.0f} |")
    return out


def _fails_own_checks(pair: Path, model: str) -> dict[str, set[str]]:
    """Per side, the points (T labels) where that side fails its own checks (loss rule, drift, stability), from
    the pair's assembly: the hot side's from two_sided.json's analysis (a first failed check other than "sides"),
    the cold side's from two_sided_<model>.csv's ``cold_failed`` (start_check.confirm_cold_side). Empty where the
    pair's assembly predates them."""
    import pandas as pd

    from spectral_collapse.scan import t_label

    out: dict[str, set[str]] = {"hot": set(), "cold": set()}
    record, table = pair / "two_sided/two_sided.json", pair / f"two_sided/two_sided_{model}.csv"
    if record.is_file():
        analysis = json.loads(record.read_text()).get(model, {}).get("analysis", {})
        out["hot"] = {t_label(r["T"]) for r in analysis.get("not_at_equilibrium", []) if r["check"] != "sides"}
    if table.is_file():
        rows = pd.read_csv(table)
        if "cold_failed" in rows:
            out["cold"] = {t_label(T) for T, failed in zip(rows["T"], rows["cold_failed"].fillna("")) if failed}
    return out


def _active_by_depth(evidence: Path, Ts: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)) -> list[str]:
    """Does depth prune more, seed by seed and side by side? Active latents (training split) of every MLP pair's
    hot and cold side at one T per decade, models side by side: the depth claim read from each side alone. A
    count where that side fails its own checks is starred: it is not even one side's equilibrium."""
    import pandas as pd

    from spectral_collapse.scan import t_label

    active: dict[tuple[str, str], dict[str, str]] = {}
    for record in sorted(evidence.glob("*/pair.json")):
        for model in json.loads(record.read_text())["models"]:
            if model == "linear":
                continue
            seed = record.parent.name.rsplit("seed", 1)[-1]
            failing = _fails_own_checks(record.parent, model)
            for side in ("hot", "cold"):
                path = record.parent / side / model / "scan_runs.parquet"
                if side == "hot" and not path.is_file():  # shipped: the marked runs table is the hot side's
                    path = record.parent / "two_sided" / f"scan_runs_{model}.parquet"
                if not path.is_file():  # a side an earlier stop removed (reference/two_sided_run/README.md)
                    continue
                runs = pd.read_parquet(path)
                by_T = {t_label(T): f"{int(n)}{'*' if t_label(T) in failing[side] else ''}"
                        for T, n in zip(runs["T"], runs["train_n_active"]) if pd.notna(n)}
                active.setdefault((model, side), {}).update(
                    {f"{t_label(T)}/{seed}": by_T.get(t_label(T), "-") for T in Ts})
    models = sorted({m for m, _ in active}, key=lambda m: int(m.split("-d")[-1]))
    if len(models) < 2:
        return []
    seeds = sorted({key.split("/")[1] for row in active.values() for key in row})
    out = ["| T | side | " + " | ".join(f"{m}: active, seed {' / '.join(seeds)}" for m in models) + " |",
           "| --- | --- | " + " | ".join("---" for _ in models) + " |"]
    for T in Ts:
        for side in ("hot", "cold"):
            cells = [" / ".join(active.get((m, side), {}).get(f"{t_label(T)}/{s}", "-") for s in seeds)
                     for m in models]
            out.append(f"| {T:.0e} | {side} | " + " | ".join(cells) + " |")
    return out + ["", "\\* that side fails its own checks there (loss rule, drift limit or stability)."]


def _two_sided_model_costs(path: Path) -> list[str]:
    """Issue 19's cost per model: the pairs' CPU seconds summed over seeds (training by side, measurement), the
    core-hours, the CPU seconds per scan point (both sides, training and measurement, per seed), and each model's
    share of the whole run."""
    import pandas as pd

    jobs = pd.read_csv(path)
    total = float(jobs["cpu_s"].sum())
    out = ["| model | seeds | training CPU s: hot / cold | measurement CPU s | core-hours | CPU s per point and seed "
           "(both sides) | share of the run |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, g in sorted(jobs.groupby("model"), key=lambda mg: (mg[0] != "linear", mg[0])):
        train = g[g["rule"] == "train"]
        by_side = train.groupby("side")["cpu_s"].sum()
        points = float(train.groupby("seed")["points"].max().sum())  # scan points per seed, summed over seeds
        cpu = float(g["cpu_s"].sum())
        out.append(f"| {model} | {g['seed'].nunique()} | {by_side.get('hot', 0.0):,.0f} / {by_side.get('cold', 0.0):,.0f} | "
                   f"{g.loc[g['rule'] == 'measure', 'cpu_s'].sum():,.0f} | {cpu / 3600:.2f} | {cpu / points:,.0f} | "
                   f"{cpu / total:.0%} |")
    return out


def two_sided_tables(evidence: str | os.PathLike = TWO_SIDED) -> str:
    """Issue 19's run from both sides: per model and seed the points where the two sides agree, the points at
    equilibrium (every check, the two sides included) and what removed the others, the resolved thresholds (for
    the linear family: within 2% of lambda_k / V), points at the update budget; then the cost per side. Empty
    when the evidence folder is not there."""
    path = Path(evidence) / "summary.json"
    if not path.is_file():
        return ""
    summary = json.loads(path.read_text())
    out = ["| pair | model | points | sides agree (of them, the cold side at equilibrium too) | at equilibrium "
           "| removed: loss rule / drift / stability / sides "
           "| resolved thresholds | linear: within 2% of lambda_k/V | at the budget: hot / cold |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, pair in summary["pairs"].items():
        for model in pair["models"]:
            m, a = pair[model], pair[model]["analysis"]
            removed = " / ".join(str(a["removed_by"].get(k, 0)) for k in ("loss_rule", "drift", "stability", "sides"))
            resolved = ", ".join(f"{n}" for _, n in sorted(a["resolved_ranks"].items()))
            within = ", ".join(f"{n}" for _, n in sorted(a.get("ranks_within", {}).items())) or "-"
            budget = pair["points_at_budget"]
            agree = f"{m['agree']} ({m['confirmed']})" if "confirmed" in m else f"{m['agree']} (not checked)"
            out.append(f"| {name} | {model} | {m['points']} | {agree} | {a['at_equilibrium']} | {removed} | "
                       f"{resolved} | {within} | {budget['hot']} / {budget['cold']} |")
    out += ["", "| pair | model | sides disagree | hot side fewer active / more | lower validation loss: cold / hot | "
            "validation loss hot / cold | one-sided checks passed there: hot / cold | one side alone: resolved "
            "thresholds hot / cold |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, pair in summary["pairs"].items():
        for model in pair["models"]:
            d = pair[model].get("disagreement")
            if d is None:
                continue
            ratio = d["loss_ratio_hot_over_cold"]
            one = d["one_sided"]
            resolved = " / ".join(", ".join(
                f"{n}" + (f" ({one[side]['ranks_within'][seed]} within 2%)" if "ranks_within" in one[side] else "")
                for seed, n in sorted(one[side]["resolved_ranks"].items())) for side in ("hot", "cold"))
            out.append(f"| {name} | {model} | {d['points']} | {d['hot_fewer_active']} / {d['hot_more_active']} | "
                       f"{d['cold_lower_loss']} / {d['loss_points'] - d['cold_lower_loss']} | "
                       + (f"{ratio[0]:.2f} to {ratio[1]:.2f}" if ratio else "-") +
                       f" | {d['hot_passes_one_sided_checks']} / {d['cold_passes_one_sided_checks']} | {resolved} |")
    graded = [(name, pair["linear"]) for name, pair in summary["pairs"].items()
              if "accepted_within_oracle" in pair.get("linear", {}).get("analysis", {})]
    if graded:  # the linear oracle grades the accepted points (start_check._accepted_against_oracle)
        out += ["", "| pair | linear: points at equilibrium | within 0.05 of the oracle's M^2 at every rank | "
                "accepted off the oracle (T: largest distance hot / cold) | sides disagree: the lower training loss "
                "on the side nearer the oracle (of the points where one is lower) |", "| --- | --- | --- | --- | --- |"]
        for name, linear in graded:
            a = linear["analysis"]
            off = "; ".join(f"{e['T']:.1e}: {e['hot_error']:.2f} / {e['cold_error']:.2f}"
                            for e in a["accepted_off_oracle"]) or "none"
            within = ", ".join(str(n) for _, n in sorted(a["accepted_within_oracle"].items()))
            arbitration = linear.get("disagreement", {}).get("loss_arbitration")  # start_check._loss_arbitration
            arbitrated = "-" if not arbitration else (
                f"{arbitration['agree']} of {arbitration['points'] - arbitration.get('ties', 0)}"
                + (f" ({arbitration['ties']} ties within {arbitration['tie_tolerance']:.1%})" if arbitration.get("ties") else ""))
            out.append(f"| {name} | {a['at_equilibrium']} | {within} | {off} | {arbitrated} |")
    out += ["", "| pair | hot: train CPU s | hot: measure CPU s | cold: train CPU s | cold: measure CPU s | all, core-h |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, pair in summary["pairs"].items():
        c = pair["cost"]
        cells = " | ".join(f"{c.get(k, 0.0):,.0f}" for k in ("hot_train_cpu_s", "hot_measure_cpu_s", "cold_train_cpu_s",
                                                             "cold_measure_cpu_s"))
        out.append(f"| {name} | {cells} | {c['cpu_s'] / 3600:.2f} |")
    out += ["", *_two_sided_model_costs(Path(evidence) / "cost_jobs.csv")]
    out += ["", *_two_sided_point_costs(Path(evidence) / "cost_points.csv")]
    trace = Path(evidence) / "reopen_trace" / "summary.json"
    if trace.is_file():  # the hot side's reopening diagnosed (benchmarks/reopen_trace.py)
        out += ["", "| diagnostic start (mlp-d4 seed 0, from the hot chain's hotter neighbour) | T | active latents "
                "at the end | validation loss | updates |", "| --- | --- | --- | --- | --- |"]
        labels = {"hold0": "the chain's reopening (the chain's own point)",
                  "hold10k": "reopened means held for 10,000 updates",
                  "residual": "reopened means on the residual's principal components",
                  "fresh_encoder": "the whole encoder from the initialisation",
                  "fresh_encoder_1e-4": "the whole encoder from the initialisation"}
        for name, run in json.loads(trace.read_text()).items():
            out.append(f"| {labels.get(name, name)} | {run['T']:.0e} | {run['active']} | "
                       f"{run['final']['val_loss']:.4f} | {run['updates']:,} |")
    depth = _active_by_depth(Path(evidence))
    if depth:
        out += ["", *depth]
    holds = sorted(Path(evidence).glob("hold/*.json"))
    if holds:  # each side's point held at its T (benchmarks/hold_point.py): slow convergence or hysteresis?
        out += ["", "| held point (benchmarks/hold_point.py; side from the file name) | T | active latents: chain "
                "point -> held | M^2 summed over the 16 leading ranks: chain point -> held | largest M^2 change (rank) | validation "
                "loss: chain point -> held | updates held at the training learning rate |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for path in holds:
            run = json.loads(path.read_text())
            start, end = (np.asarray(run[k]["M2_ranked"], float) for k in ("start", "end"))
            change = end - start
            k = int(np.argmax(np.abs(change)))
            side = run.get("side", path.stem.split("_")[-2])  # the stop-33 holds predate the recorded side
            out.append(f"| {run['model']} seed {run['seed']}, {side} side | {run['T']:.0e} | "
                       f"{run['start']['active']} -> {run['end']['active']} | {start.sum():.2f} -> {end.sum():.2f} | "
                       f"{change[k]:+.2f} ({k + 1}) | {run['start']['loss']:.4f} -> {run['end']['loss']:.4f} | "
                       f"{run['updates']:,} |")
    total = summary["cost"]
    out += ["", f"The pairs so far: {total['cpu_s']:,.0f} CPU s = {total['core_hours']:.2f} core-hours (training "
                f"{total.get('train_cpu_s', 0.0) / 3600:.2f}, measurement with the stability check "
                f"{total.get('measure_cpu_s', 0.0) / 3600:.2f})."]
    return "\n".join(out)


if __name__ == "__main__":
    print(readme_tables(sys.argv[1] if len(sys.argv) > 1 else BUNDLE))
    for evidence in (TWO_SIDED, TWO_SIDED_ENCODER):
        two_sided = two_sided_tables(evidence)
        if two_sided:
            print(f"\n{evidence.relative_to(BUNDLE.parent)}:\n\n" + two_sided)
