"""Whether a cached table is whole: a truncated or overwritten table is recognised by its format's signature and
set aside (renamed), never deleted (issue 23). Used by the full run (a corrupt table is set aside before the DAG is
built, so that the run remakes it) and by the redraw workflow (a corrupt table stops it before any job)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable


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
