"""The study's configuration outside Snakemake: config.yaml (plus presets) validated against the workflow's
schema, with the schema's defaults filled in, exactly as the Snakefile's ``validate()`` does.

The schema (``workflow/schemas/config.schema.yaml``) is the one place where defaults live; tests,
benchmarks and notebooks get the same values as a workflow run by calling ``load_config``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
CONFIG = REPO_ROOT / "config.yaml"


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Snakemake's ``--configfile`` merge: nested dicts are merged key by key, anything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A validated copy of ``config`` with the schema's defaults filled in (raises on a bad value)."""
    from snakemake.utils import validate

    out = copy.deepcopy(dict(config))
    validate(out, schema=str(SCHEMA))
    return out


def load_config(*presets: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """config.yaml with each preset (a YAML path or a dict) merged over it, validated, defaults filled."""
    config = yaml.safe_load(CONFIG.read_text())
    for preset in presets:
        layer = preset if isinstance(preset, Mapping) else yaml.safe_load(Path(preset).read_text())
        config = merge(config, layer or {})
    return validate_config(config)
