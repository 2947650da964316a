"""Redraw-only runs (issue 11): `snakemake figures`, `make figures` and `make report` draw the figures,
tables and report from the cached tables and never run anything upstream of them.

The one place that names
- REDRAW_RULES: the rules that draw from the cached tables (the only rules of a redraw-only run);
- cached_inputs(): the cached tables and records those rules read (must exist; never recomputed);
- which command-line requests are redraw-only (`parse_request`, `is_redraw_only`).
A renamed redraw rule or a moved cached table is a one-line change here.

The Snakefile calls `start` (through common.smk) when the request is redraw-only. It stops, naming the
missing files and the command that produces them, when a cached input is missing; it removes every other
rule from the workflow before the DAG is built, so no data, training, measurement or collect job can run
whatever Snakemake's rerun triggers say; and it warns (never fails, never recomputes) when a cached input
is older than the code that produced it or was produced with another config.

Why the command line: Snakemake 9 assigns `workflow.dag_settings` (targets, --forcerun, ...) only after
the Snakefile is parsed (snakemake/api.py, DAGApi.__post_init__), so at parse time it is None. The
request is read from sys.argv with Snakemake's own argument parser instead; anything it cannot read
(the Python API, a cluster job's `--target-jobs`) is a full run, i.e. today's behaviour.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from spectral_collapse.codefiles import package_files
from spectral_collapse.paths import ANALYSIS_ROOT, FIGURE_DIR, PCA_TABLE, PER_MODEL_CACHED, VERIFIED
from spectral_collapse.storepath import LEGACY_REPORT

# --------------------------------------------------------------------------- the redraw boundary

# Rules that draw from the cached tables: the per-model analysis (`analyse_model`), the combined summary, the
# figures and their plain-name target. Everything else is upstream and absent from a redraw-only run.
REDRAW_RULES: tuple[str, ...] = ("analyse_model", "summary", "figure", "figures")
# Plain-name targets that only redraw, and the folder of redraw-only file targets.
REDRAW_TARGETS: tuple[str, ...] = ("figures",)
REDRAW_FILE_PREFIX = FIGURE_DIR.split("{")[0]  # results/figures/
# `snakemake --report` without targets reports the default target: with nothing run, a redraw too.
DEFAULT_TARGET = "all"
KEEP_RULES: tuple[str, ...] = (*REDRAW_RULES, DEFAULT_TARGET)

# The cached inputs of the redraw rules, and the plain-name target that produces each (`run_command`).
ANALYSIS_COMMAND = "analysis"
DATA_COMMAND = "data"
STORE_REPORT = LEGACY_REPORT  # the store description of a run made before stores were keyed (storepath)


def cached_inputs(models: Iterable[str], store_report: str = STORE_REPORT) -> dict[str, str]:
    """{path: command that produces it} for every cached input of a redraw of `models` (`store_report`:
    the config's store description, storepath.store_paths)."""
    out = {f"{ANALYSIS_ROOT}/{model}/{name}": ANALYSIS_COMMAND for model in models for name in PER_MODEL_CACHED}
    out[PCA_TABLE] = ANALYSIS_COMMAND
    out[VERIFIED] = DATA_COMMAND
    out[store_report] = DATA_COMMAND
    return out


class RedrawError(Exception):
    """A redraw-only run cannot start (missing cached inputs, a redraw rule not defined)."""


# --------------------------------------------------------------------------- what was asked for


@dataclass(frozen=True)
class Request:
    """The parts of a snakemake command line that decide whether it only redraws."""

    targets: tuple[str, ...] = ()
    job_rules: tuple[str, ...] = ()  # rules of --target-jobs (a job submitted to a cluster)
    report: bool = False  # --report without --report-after-run: builds the report, runs nothing
    named_rules: tuple[str, ...] = ()  # rules named by --forcerun / --until / --omit-from
    inspect: bool = False  # --lint, --list-rules, ...: look at every rule
    configfiles: tuple[str, ...] = ()  # --configfile presets, for the commands a message suggests
    dryrun: bool = False  # -n: change nothing on disk


def _is_snakemake_cli(argv: Sequence[str]) -> bool:
    if not argv:
        return False
    prog = Path(argv[0])
    return prog.name == "snakemake" or (prog.name == "__main__.py" and prog.parent.name == "snakemake")


def parse_request(argv: Sequence[str] | None = None) -> Request | None:
    """The request of this snakemake command line (default: sys.argv), or None when it is not one."""
    if argv is None:
        if not _is_snakemake_cli(sys.argv):
            return None
        argv = sys.argv[1:]
    try:
        from snakemake.cli import get_argument_parser

        args, _ = get_argument_parser().parse_known_args(list(argv))
    except (Exception, SystemExit):  # an unreadable command line is a full run
        return None
    named = [*(args.forcerun or ()), *(args.until or ()), *(args.omit_from or ())]
    inspect = any(getattr(args, name, False) for name in ("lint", "list_rules", "list_target_rules", "print_compilation"))
    return Request(
        targets=tuple(os.path.normpath(t) if "/" in t else t for t in (args.targets or ())),
        job_rules=tuple(sorted({spec.rulename for spec in (args.target_jobs or ())})),
        report=bool(args.report) and not args.report_after_run,
        named_rules=tuple(named),
        inspect=bool(inspect),
        configfiles=tuple(str(c) for c in (args.configfile or ())),
        dryrun=bool(getattr(args, "dryrun", False)),
    )


def is_redraw_only(request: Request | None) -> bool:
    """True when the request asks only for redraw targets (`figures`, files under results/figures/, or
    --report of those or of the default target), and names no other rule (--forcerun train is a request
    for training)."""
    if request is None or request.job_rules or request.inspect:
        return False
    allowed = set(REDRAW_TARGETS) | ({DEFAULT_TARGET} if request.report else set())
    targets = request.targets or ((DEFAULT_TARGET,) if request.report else ())
    if not targets or not all(t in allowed or t.startswith(REDRAW_FILE_PREFIX) for t in targets):
        return False
    return all(name in REDRAW_RULES for name in request.named_rules)


# --------------------------------------------------------------------------- checks


def run_command(target: str, configfiles: Sequence[str] = ()) -> str:
    """A command line that makes `target` with these presets: the target before --configfile, which
    would otherwise take the target for one more config file."""
    presets = "".join(f" --configfile {c}" for c in configfiles)
    return f"`.venv/bin/snakemake {target}{presets}`"


def table_problem(path: str | os.PathLike) -> str | None:
    """Why a cached table cannot be read (truncated, not the format its name says), or None. Cheap: it reads
    the few bytes each format starts and ends with (Parquet's PAR1 at both ends, netCDF-4/HDF5 or classic
    netCDF's signature), and parses JSON records in full (they are small)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.suffix == ".json":
            json.loads(path.read_text())
            return None
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(max(size - 4, 0))
            tail = fh.read(4)
    except (OSError, ValueError) as exc:
        return f"not readable ({type(exc).__name__}: {exc})"
    if path.suffix == ".parquet" and (size < 12 or head[:4] != b"PAR1" or tail != b"PAR1"):
        return f"not a complete Parquet file ({size} bytes; truncated or overwritten)"
    if path.suffix == ".nc" and not (head == b"\x89HDF\r\n\x1a\n" or head[:3] == b"CDF"):
        return f"not a netCDF file ({size} bytes)"
    return None


def check_cached_inputs(models: Sequence[str], root: str | os.PathLike = ".", store_report: str = STORE_REPORT,
                        configfiles: Sequence[str] = ()) -> None:
    """Raise RedrawError naming every missing or corrupt cached input and a command that remakes it, before
    any job starts (so a redraw that cannot succeed removes nothing)."""
    root = Path(root)
    missing: dict[str, list[str]] = {}
    corrupt: list[str] = []
    for path, target in cached_inputs(models, store_report).items():
        if not (root / path).is_file():
            missing.setdefault(target, []).append(path)
        elif (problem := table_problem(root / path)) is not None:
            corrupt.append(f"{path}: {problem}")
    if not missing and not corrupt:
        return
    lines = []
    if missing:
        n = sum(len(paths) for paths in missing.values())
        lines += [
            f"Cannot redraw: {n} cached result(s) that the figures, tables and report are drawn from are missing.",
            "`snakemake figures`, `make figures` and `make report` only redraw; they never recompute these.",
        ]
        for target, paths in missing.items():
            lines.append(f"Produce them with {run_command(target, configfiles)} (or the full run, "
                         f"{run_command('all', configfiles)}):")
            lines += [f"    {p}" for p in paths]
        found = {p.parent.name for p in (root / ANALYSIS_ROOT).glob("*/scan_runs.parquet")}
        if found - set(models):
            lines.append(
                f"{ANALYSIS_ROOT} holds scan tables of {', '.join(sorted(found))}; this config asks for "
                f"{', '.join(models)}: were they made with another --configfile (e.g. presets/ci.yaml)?"
            )
    if corrupt:
        lines.append(f"Cannot redraw: {len(corrupt)} cached result(s) are corrupt; nothing was run or removed:")
        lines += [f"    {c}" for c in corrupt]
        lines.append(f"The full run sets corrupt tables aside (as <name>.corrupt) and remakes them: "
                     f"{run_command('all', configfiles)}.")
    raise RedrawError("\n".join(lines))


def set_aside_corrupt(paths: Iterable[str], root: str | os.PathLike = ".") -> list[str]:
    """Rename every corrupt table among `paths` to <name>.corrupt, so that the run remakes it (each is a
    target of the full run); return the messages. A truncated table otherwise stops every consumer, and
    Snakemake, which deletes a failed job's outputs, turns it into missing results that no run remakes."""
    root = Path(root)
    out = []
    for path in paths:
        target = root / path
        if not target.is_file() or (problem := table_problem(target)) is None:
            continue
        os.replace(target, target.with_name(target.name + ".corrupt"))
        out.append(f"{path}: {problem}; set aside as {path}.corrupt, remade by this run")
    return out


def drop_upstream_rules(workflow: Any, keep: Iterable[str] = KEEP_RULES) -> list[Any]:
    """Remove every rule not in `keep` from a parsed workflow (before the DAG is built); return them.

    Snakemake has no public call for this (`--allowed-rules` is a command-line setting that only
    arrives after parsing), so this edits Workflow._rules and Workflow._localrules of the pinned
    Snakemake 9 (tests/test_cached_runs.py checks the behaviour)."""
    rules, local = getattr(workflow, "_rules", None), getattr(workflow, "_localrules", None)
    if not isinstance(rules, dict) or not isinstance(local, set):
        raise RedrawError(
            "cannot restrict this workflow to its redraw rules: Snakemake's Workflow._rules/_localrules changed "
            "(this code is written for the Snakemake pinned in requirements.txt)."
        )
    undefined = [name for name in REDRAW_RULES if name not in rules]
    if undefined:
        raise RedrawError(
            f"redraw rule(s) {', '.join(undefined)} listed in spectral_collapse.redraw.REDRAW_RULES are not defined "
            "in the workflow; after renaming a rule, update that list."
        )
    keep = set(keep)
    dropped = [rule for name, rule in rules.items() if name not in keep]
    for rule in dropped:
        del rules[rule.name]
        local.discard(rule.name)
    return dropped


# --------------------------------------------------------------------------- staleness: code


def rule_script(rule: Any) -> Path | None:
    """The script file of a `script:` rule, or None."""
    script = getattr(rule, "script", None)
    if not script:
        return None
    base = rule.basedir.get_path_or_uri(secret_free=True) if rule.basedir is not None else "."
    return Path(os.path.normpath(os.path.join(str(base), str(script))))


def _upstream_rules(path: str, dropped: Sequence[Any], depth: int = 0) -> set[str] | None:
    """Names of the dropped rules that `path` was made by, directly or through their file inputs; None
    when an input is a function or has wildcards (then every dropped rule may be upstream)."""
    from snakemake.io import contains_wildcard, is_callable

    names: set[str] = set()
    for rule in dropped:
        try:
            produces = rule.is_producer(path)
        except Exception:
            return None
        if not produces:
            continue
        names.add(rule.name)
        for item in rule.input:
            if is_callable(item) or contains_wildcard(str(item)) or depth > 20:
                return None
            sub = _upstream_rules(str(item), dropped, depth + 1)
            if sub is None:
                return None
            names |= sub
    return names


def stale_code_warnings(dropped: Sequence[Any], models: Sequence[str], root: str | os.PathLike = ".",
                        store_report: str = STORE_REPORT) -> list[str]:
    """A warning when a cached input is older than a code file of the rules that produced it (their
    scripts and the spectral_collapse modules those import)."""
    root = Path(root)
    code_of: dict[str, set[Path]] = {}
    for rule in dropped:
        script = rule_script(rule)
        code_of[rule.name] = package_files([script]) if script else set()
    mtimes = {code: code.stat().st_mtime_ns for codes in code_of.values() for code in codes}
    newer: dict[Path, list[str]] = {}
    users: dict[Path, set[str]] = {}
    for path in cached_inputs(models, store_report):
        target = root / path
        if not target.is_file():
            continue
        upstream = _upstream_rules(path, dropped)
        made = target.stat().st_mtime_ns
        for name in sorted(code_of if upstream is None else upstream):
            for code in code_of.get(name, ()):
                users.setdefault(code, set()).add(name)
                if mtimes[code] > made and path not in newer.setdefault(code, []):
                    newer[code].append(path)
    newer = {code: paths for code, paths in newer.items() if paths}
    if not newer:
        return []
    lines = [
        "Redraw only: some cached inputs are older than the code of the path that produced them. They are "
        "drawn as they are; nothing is recomputed."
    ]
    for code, paths in sorted(newer.items(), key=lambda kv: -mtimes[kv[0]]):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtimes[code] / 1e9))
        more = f" and {len(paths) - 2} more" if len(paths) > 2 else ""
        lines.append(
            f"    {_show(code, root)} (modified {stamp}; rules {', '.join(sorted(users[code]))}) is newer than "
            f"{', '.join(paths[:2])}{more}"
        )
    lines.append(
        "If the change matters for the results, recompute with `snakemake --forcerun <rule>` for the rules named "
        "(a training rule retrains); after a checkout or copy that only touched these files, ignore this. "
        "docs/running.md: 'What reruns, what never does'."
    )
    return ["\n".join(lines)]


def _show(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- staleness: config

STORE_KEYS = ("n_train", "block_km", "heldout_fraction", "split_seed")


def training_fingerprint(config: Mapping[str, Any], model_id: str) -> dict[str, Any]:
    """The parts of a (validated) config that one model's trained and measured runs depend on: the store, the
    model's scan (its grid, seeds, group size), what its training jobs are given and the measured splits (not
    the analysis settings, which the redraw applies, and not the data's location, which is not its identity)."""
    from spectral_collapse.scan import ModelSpec, model_points_per_job, model_seeds, model_settings, model_t_grid

    family = ModelSpec.from_id(model_id).family
    return {
        "store": {k: config["store"].get(k) for k in STORE_KEYS},
        "scan": {"T": model_t_grid(config, family), "seeds": model_seeds(config, model_id),
                 "points_per_job": model_points_per_job(config, family)},
        "job": model_settings(config, model_id),
        "measured_splits": config["models"][family]["measured_splits"],
    }


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: cached {old!r}, config {new!r}"]


def config_warnings(
    config: Mapping[str, Any], models: Sequence[str], root: str | os.PathLike = ".",
    run_records: Callable[[str], Sequence[str]] | None = None,
) -> list[str]:
    """Warnings when the cached inputs were produced with another config than `config`.

    Cheap checks of what the cached inputs record: the store settings and data checksums
    (worldclim_store.json), the scan grid and seeds per model (scan_runs.parquet), and, where the runs'
    own records are present (`run_records(model)`, e.g. run.json), the training settings of each model."""
    from spectral_collapse.scan import ModelSpec, model_seeds, model_t_grid, t_label
    from spectral_collapse.worldclim import pinned_checksums

    from spectral_collapse.storepath import store_paths

    root = Path(root)
    store_report = store_paths(config["store"], root).report
    found: list[str] = []
    try:
        store = json.loads((root / store_report).read_text())
        found += [f"store.{k}: cached {store.get(k)!r}, config {config['store'].get(k)!r}"
                  for k in STORE_KEYS if k in store and store.get(k) != config["store"].get(k)]
        if store.get("sha256") and store["sha256"] != pinned_checksums():
            found.append("data: the store was built from other WorldClim files than the pinned ones")
    except (OSError, ValueError, KeyError) as exc:
        found.append(f"{store_report}: not readable ({exc})")
    for model in models:
        grid = {t_label(T) for T in model_t_grid(config, ModelSpec.from_id(model).family)}
        seeds = set(model_seeds(config, model))
        path = root / ANALYSIS_ROOT / model / "scan_runs.parquet"
        try:
            import pandas as pd

            runs = pd.read_parquet(path, columns=["T_grid", "seed"])  # the scan points (T is T_eff when learned)
            cached_grid = {t_label(float(T)) for T in runs["T_grid"]}
            cached_seeds = {int(s) for s in runs["seed"]}
        except Exception as exc:  # noqa: BLE001 - a warning, never a failure
            found.append(f"{path.relative_to(root)}: not readable ({exc})")
            continue
        if cached_grid != grid:
            found.append(f"{model}: the cached scan has {len(cached_grid)} T values, the config's grid {len(grid)} "
                         f"({len(cached_grid - grid)} cached only, {len(grid - cached_grid)} in the config only)")
        if cached_seeds != seeds:
            found.append(f"{model}: cached seeds {sorted(cached_seeds)}, config seeds {sorted(seeds)}")
        record = next((root / p for p in (run_records(model) if run_records else ()) if (root / p).is_file()), None)
        if record is None:
            continue
        try:
            recorded = json.loads(record.read_text())["config"]
            found += [f"{model}: {d}" for d in _differences(training_fingerprint(recorded, model),
                                                            training_fingerprint(config, model))]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            found.append(f"{record.relative_to(root)}: no readable config ({exc})")
    if not found:
        return []
    return ["\n".join([
        "Redraw only: the cached inputs were produced with another config than this one. They are drawn as "
        "they are; nothing is recomputed. Differences:",
        *(f"    {line}" for line in found[:12]),
        *([f"    ... and {len(found) - 12} more"] if len(found) > 12 else []),
        "Use the --configfile of the run that produced them, or run the study with this config (`make run`).",
    ])]


# --------------------------------------------------------------------------- entry point


def start(
    workflow: Any, config: Mapping[str, Any], models: Sequence[str],
    run_records: Callable[[str], Sequence[str]] | None = None, root: str | os.PathLike = ".",
    configfiles: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """Begin a redraw-only run: check the cached inputs (RedrawError when missing or corrupt), drop every rule
    upstream of them, and return (names of the dropped rules, staleness warnings)."""
    from spectral_collapse.storepath import store_paths

    store_report = store_paths(config["store"], root).report
    check_cached_inputs(models, root, store_report, configfiles)
    dropped = drop_upstream_rules(workflow)
    warnings = (stale_code_warnings(dropped, models, root, store_report)
                + config_warnings(config, models, root, run_records))
    return [rule.name for rule in dropped], warnings
