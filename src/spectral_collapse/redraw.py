"""The redraw boundary (issues 11 and 21): what the redraw workflow (workflow/Redraw.smk, `make figures`, `make
report`, `make reference-figures`) draws from, and what it says before it starts.

The redraw workflow includes only the rules that draw from the cached tables (REDRAW_RULES), so it cannot fetch,
train, measure or collect whatever changed. A missing cached table surfaces as Snakemake's own missing-input error,
after the hint printed here (which tables, and a command that makes them); a corrupt one stops it before any job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from spectral_collapse.integrity import table_problem
from spectral_collapse.paths import ANALYSIS_ROOT, PCA_TABLE, PER_MODEL_CACHED, SCAN_RUNS, VERIFIED
from spectral_collapse.storepath import LEGACY_DESCRIPTION

# The rules of the redraw workflow (workflow/Redraw.smk; tests/test_cached_runs.py checks the two agree).
REDRAW_RULES: tuple[str, ...] = ("analyse_model", "summary", "figure", "figures")
# Scripts of main-workflow rules that make none of the redraw's cached inputs (the spectroscopy of issue 20 reads the
# cache and the trained models, and only the full run makes it): their code never makes a cached input stale.
OFF_PATH_SCRIPTS: tuple[str, ...] = ("latent_variables.py", "collinearity.py", "spectroscopy.py")
# The plain-name targets of the main workflow that make the cached inputs, named in the hint.
ANALYSIS_COMMAND = "analysis"
DATA_COMMAND = "data"
STORE_DESCRIPTION = LEGACY_DESCRIPTION  # the store description of a run made before stores were keyed (storepath)


class RedrawError(Exception):
    """A redraw cannot start (corrupt or missing cached inputs)."""


def cached_inputs(models: Iterable[str], store_description: str = STORE_DESCRIPTION, verified: str = VERIFIED
                  ) -> dict[str, str]:
    """{path: command that produces it} for every cached input of a redraw of `models` (`store_description`:
    the config's store description, storepath.store_paths)."""
    out = {f"{ANALYSIS_ROOT}/{model}/{name}": ANALYSIS_COMMAND for model in models for name in PER_MODEL_CACHED}
    out[PCA_TABLE] = ANALYSIS_COMMAND
    out[verified] = DATA_COMMAND  # the data's verified record (storepath.store_paths(...).verified)
    out[store_description] = DATA_COMMAND
    return out


def run_command(target: str, configfiles: Sequence[str] = ()) -> str:
    """A command line that makes `target` with these presets: the target before --configfile, which
    would otherwise take the target for one more config file."""
    presets = "".join(f" --configfile {c}" for c in configfiles)
    return f"`.venv/bin/snakemake {target}{presets}`"


def missing_hint(models: Sequence[str], root: str | os.PathLike = ".", store_description: str = STORE_DESCRIPTION,
                 verified: str = VERIFIED, configfiles: Sequence[str] = ()) -> str | None:
    """The hint for missing cached inputs (their names and a command that makes them), or None."""
    root = Path(root)
    missing: dict[str, list[str]] = {}
    for path, target in cached_inputs(models, store_description, verified).items():
        if not (root / path).is_file():
            missing.setdefault(target, []).append(path)
    if not missing:
        return None
    n = sum(len(paths) for paths in missing.values())
    lines = [
        f"Cannot redraw: {n} cached result(s) that the figures, tables and report are drawn from are missing.",
        "`make figures`, `make report` and the redraw workflow (workflow/Redraw.smk) only redraw; they never "
        "recompute these.",
    ]
    for target, paths in missing.items():
        lines.append(f"Produce them with {run_command(target, configfiles)} (or the full run, "
                     f"{run_command('all', configfiles)}):")
        lines += [f"    {p}" for p in paths]
    found = {p.parent.name for p in (root / ANALYSIS_ROOT).glob(f"*/{SCAN_RUNS}")}
    if found - set(models):
        lines.append(f"{ANALYSIS_ROOT} holds scan tables of {', '.join(sorted(found))}; this config asks for "
                     f"{', '.join(models)}: were they made with another --configfile (e.g. presets/ci.yaml)?")
    return "\n".join(lines)


def corrupt_message(models: Sequence[str], root: str | os.PathLike = ".", store_description: str = STORE_DESCRIPTION,
                    verified: str = VERIFIED, configfiles: Sequence[str] = ()) -> str | None:
    """Why the redraw cannot start because cached inputs are corrupt (naming them), or None."""
    root = Path(root)
    corrupt = [f"{path}: {problem}" for path in cached_inputs(models, store_description, verified)
               if (root / path).is_file() and (problem := table_problem(root / path)) is not None]
    if not corrupt:
        return None
    return "\n".join([
        f"Cannot redraw: {len(corrupt)} cached result(s) are corrupt; nothing was run or removed:",
        *(f"    {c}" for c in corrupt),
        f"The full run sets corrupt tables aside (as <name>.corrupt) and remakes them: {run_command('all', configfiles)}.",
    ])


def check_cached_inputs(models: Sequence[str], root: str | os.PathLike = ".", store_description: str = STORE_DESCRIPTION,
                        verified: str = VERIFIED, configfiles: Sequence[str] = ()) -> None:
    """Raise RedrawError naming every missing or corrupt cached input and a command that remakes it."""
    problems = [m for m in (missing_hint(models, root, store_description, verified, configfiles),
                            corrupt_message(models, root, store_description, verified, configfiles)) if m]
    if problems:
        raise RedrawError("\n".join(problems))
