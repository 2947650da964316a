"""The study's configuration outside Snakemake: config.yaml (plus presets) validated against the workflow's
schema, with the schema's defaults filled in, exactly as the Snakefile's ``validate()`` does.

The schema (``workflow/schemas/config.schema.yaml``) is the one place where defaults live; tests,
benchmarks and notebooks get the same values as a workflow run by calling ``load_config``.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, MutableMapping

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


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA.read_text())


def schema_defaults(*block: str) -> dict[str, Any]:
    """The defaults the schema gives the keys of one config block, e.g. ``("training",)``, ``("models", "mlp")``
    or ``("decoder",)``: for code that takes a block's settings without a validated config (the schema is the
    one place defaults live)."""
    node = _schema()
    for key in block:
        node = node["properties"][key]
    return {key: copy.deepcopy(spec["default"]) for key, spec in node.get("properties", {}).items()
            if "default" in spec}


class ConfigError(ValueError):
    """A config value the study cannot run with; the message's first line names the key and the fix."""


# A number as YAML 1.1 leaves it a string (`1e-3`) and `--config key=...` delivers every nested value.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?\.?(inf|nan)", re.IGNORECASE)
_BOOL = {"true": True, "false": False}


def _coerced(value: str, types: list[str]) -> Any:
    """``value`` as the schema's type when it spells one (else the string unchanged)."""
    text = value.strip()
    if "integer" in types and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if "number" in types and _NUMBER.fullmatch(text):
        return float(re.sub(r"\.(?=(inf|nan))", "", text, flags=re.IGNORECASE))
    if "boolean" in types and text.lower() in _BOOL:
        return _BOOL[text.lower()]
    return value


def _key(path: Any) -> str:
    """`scan.T.values[1]` for a jsonschema error path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _set(config: MutableMapping[str, Any], path: list[Any], value: Any) -> None:
    node: Any = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def coerce_strings(config: MutableMapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Turn strings into the numbers or booleans the schema asks for, in place; return the keys changed.

    Why: `--config 'scan={"T":{"values":[0.1]}}'` hands nested values over as strings (Snakemake parses
    them with YAML's BaseLoader), and YAML 1.1 reads `1e-3` as a string; both are unambiguous numbers."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    changed: list[str] = []
    for _ in range(100):  # a fix can only uncover errors deeper in the same branch
        fixes = []
        for error in _all_errors(validator.iter_errors(config)):
            types = error.validator_value if error.validator == "type" else None
            if isinstance(error.instance, str) and types is not None:
                types = [types] if isinstance(types, str) else list(types)
                value = _coerced(error.instance, types)
                if value is not error.instance:
                    fixes.append((list(error.absolute_path), value))
        if not fixes:
            return changed
        for path, value in fixes:
            _set(config, path, value)
            changed.append(_key(path))
    return changed


def _all_errors(errors: Any) -> Iterator[Any]:
    for error in errors:
        yield error
        yield from _all_errors(error.context or ())


def _hint(error: Any) -> str:
    """The fix for a schema error, in one sentence."""
    instance, kind = error.instance, error.validator
    expected = [error.validator_value] if isinstance(error.validator_value, str) else list(error.validator_value or ())
    if kind == "type" and isinstance(instance, str) and {"number", "integer"} & set(expected):
        return "write a number (in YAML write 1.0e-3, not 1e-3, which YAML 1.1 reads as text)."
    if kind == "additionalProperties":
        return "remove or rename the key (the schema lists every key: workflow/schemas/config.schema.yaml)."
    if kind == "required":
        return "add the missing key (its meaning: workflow/schemas/config.schema.yaml)."
    return "fix the value (allowed values: workflow/schemas/config.schema.yaml)."


def schema_error(error: Any) -> ConfigError:
    """A one-line ConfigError for a jsonschema ValidationError."""
    return ConfigError(f"config key {_key(error.absolute_path)}: {error.message}; {_hint(error)}")


def _windows(config: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in (config.get("analysis") or {}).items():
        if key.endswith("_window") or key == "powerlaw_ranks":
            yield f"analysis.{key}", value


def _t_specs(config: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance((config.get("scan") or {}).get("T"), Mapping):
        yield "scan.T", config["scan"]["T"]
    for family, block in (config.get("models") or {}).items():
        if isinstance(block, Mapping) and isinstance(block.get("T"), Mapping):
            yield f"models.{family}.T", block["T"]


def check_config(config: Mapping[str, Any]) -> None:
    """What the schema cannot say: finite temperatures, increasing windows, runs a rule can produce."""
    for where, spec in _t_specs(config):
        for key in ("max", "min"):
            if key in spec and not math.isfinite(float(spec[key])):
                raise ConfigError(f"config key {where}.{key}: {spec[key]!r} is not a finite number; give a "
                                  "positive finite temperature.")
        for i, value in enumerate(spec.get("values") or ()):
            if not math.isfinite(float(value)):
                raise ConfigError(f"config key {where}.values[{i}]: {value!r} is not a finite number; give "
                                  "positive finite temperatures only.")
    for where, window in _windows(config):
        if isinstance(window, (list, tuple)) and len(window) == 2 and not window[0] < window[1]:
            raise ConfigError(f"config key {where}: {list(window)} has its lower end not below its upper end; "
                              f"write [lower, upper] with lower < upper, e.g. [{window[1]}, {window[0]}].")
    from spectral_collapse.scan import (GROUP_PATTERN, group_label, model_points_per_job, model_specs,
                                        model_t_grid, scan_groups)

    for spec in model_specs(config):
        grid = model_t_grid(config, spec.family)
        for Ts in scan_groups(grid, model_points_per_job(config, spec.family)):
            if not re.fullmatch(GROUP_PATTERN, group_label(Ts)):
                raise ConfigError(f"config: {spec.model_id} scan points {Ts} give the run folder "
                                  f"{group_label(Ts)!r}, which no rule can produce; check the model's T values.")


def validate_in_place(config: MutableMapping[str, Any], schema: str | Path = SCHEMA) -> None:
    """Coerce, validate and complete ``config`` in place (what the Snakefile runs); raise ConfigError whose
    first line names the key and the fix."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match
    from snakemake.utils import validate

    schema_dict = yaml.safe_load(Path(schema).read_text())
    coerce_strings(config, schema_dict)
    error = best_match(Draft202012Validator(schema_dict).iter_errors(config))
    if error is not None:  # the short message first, instead of Snakemake's 40 lines of schema
        raise schema_error(error)
    validate(config, schema=str(schema))  # fills in the defaults
    check_config(config)


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A validated copy of ``config`` with the schema's defaults filled in (raises ConfigError on a bad
    value, naming the key)."""
    out = copy.deepcopy(dict(config))
    validate_in_place(out)
    return out


def load_config(*presets: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """config.yaml with each preset (a YAML path or a dict) merged over it, validated, defaults filled."""
    config = yaml.safe_load(CONFIG.read_text())
    for preset in presets:
        layer = preset if isinstance(preset, Mapping) else yaml.safe_load(Path(preset).read_text())
        config = merge(config, layer or {})
    return validate_config(config)
