"""Staleness warnings of a redraw (issue 11): cached tables older than the code that produced them, or produced with
another config. A redraw draws them as they are and never recomputes them; these warnings say when that may
matter. Cheap: file times, and the small records the cached tables carry."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from spectral_collapse.codefiles import package_files
from spectral_collapse.paths import ANALYSIS_ROOT, SCAN_RUNS

# --------------------------------------------------------------------------- staleness: code


def stale_code_warnings(upstream_scripts: Iterable[Path], cached: Iterable[str],
                        root: str | os.PathLike = ".") -> list[str]:
    """A warning when a cached input is older than the code upstream of the cache: the scripts of the rules
    that are not part of the redraw workflow, and the spectral_collapse modules they import."""
    root = Path(root)
    scripts = sorted(Path(s) for s in upstream_scripts)
    code = package_files(scripts)
    mtimes = {path: path.stat().st_mtime_ns for path in code}
    newer: dict[Path, list[str]] = {}
    for path in cached:
        target = root / path
        if not target.is_file():
            continue
        made = target.stat().st_mtime_ns
        for source, mtime in mtimes.items():
            if mtime > made:
                newer.setdefault(source, []).append(path)
    if not newer:
        return []
    lines = [
        "Redraw only: some cached inputs are older than the code of the path that produced them. They are "
        "drawn as they are; nothing is recomputed."
    ]
    for source, paths in sorted(newer.items(), key=lambda kv: -mtimes[kv[0]]):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtimes[source] / 1e9))
        more = f" and {len(paths) - 2} more" if len(paths) > 2 else ""
        lines.append(f"    {_show(source, root)} (modified {stamp}) is newer than {', '.join(paths[:2])}{more}")
    lines.append(
        "If the change matters for the results, recompute with the full workflow (`snakemake --forcerun <rule>` "
        f"for the rules whose scripts are among {', '.join(s.name for s in scripts)}; a training rule retrains); "
        "after a checkout or copy that only touched these files, ignore this. docs/running.md: 'What reruns, "
        "what never does'."
    )
    return ["\n".join(lines)]


def _show(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- staleness: config

STORE_KEYS = ("n_train", "block_km", "heldout_fraction", "split_seed")


def job_identity(config: Mapping[str, Any], model_id: str) -> dict[str, Any]:
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
    store_description = store_paths(config["store"], root, data=config["data"]).description
    found: list[str] = []
    try:
        store = json.loads((root / store_description).read_text())
        found += [f"store.{k}: cached {store.get(k)!r}, config {config['store'].get(k)!r}"
                  for k in STORE_KEYS if k in store and store.get(k) != config["store"].get(k)]
        if config["data"]["source"] == "worldclim" and store.get("sha256") and store["sha256"] != pinned_checksums():
            found.append("data: the store was built from other WorldClim files than the pinned ones")
    except (OSError, ValueError, KeyError) as exc:
        found.append(f"{store_description}: not readable ({exc})")
    for model in models:
        grid = {t_label(T) for T in model_t_grid(config, ModelSpec.from_id(model).family)}
        seeds = set(model_seeds(config, model))
        path = root / ANALYSIS_ROOT / model / SCAN_RUNS
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
            found += [f"{model}: {d}" for d in _differences(job_identity(recorded, model),
                                                            job_identity(config, model))]
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
