"""A claim is stated only where every seed supports it (issue 17, item 4): pooled numbers can look better than
any seed (the pooled best D~_K is a minimum over seeds), so the verdict is taken seed by seed."""

from __future__ import annotations

from typing import Any, Callable, Mapping

HOLDS = "holds for every seed"
FAILS = "fails for every seed"
SEED_DEPENDENT = "seed-dependent"
UNRESOLVED = "not resolved"


def verdict(per_seed: Mapping[Any, Any], holds: Callable[[Any], bool]) -> str:
    """HOLDS when `holds` is true for every seed's value, FAILS when for none, SEED_DEPENDENT otherwise;
    UNRESOLVED when some seed has no value (None): a claim cannot rest on a number that was not measured."""
    values = list(per_seed.values())
    if not values or any(v is None for v in values):
        return UNRESOLVED
    ok = [bool(holds(v)) for v in values]
    return HOLDS if all(ok) else FAILS if not any(ok) else SEED_DEPENDENT
