"""Send everything a training-stage rule script prints to its rule's log file.

Lightning and the training loop print progress to stdout/stderr; inside a Snakemake job that output
belongs in the rule's `log:` file, together with the traceback when the job fails.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from pathlib import Path
from typing import Iterator, TextIO


@contextlib.contextmanager
def output_to_log(log_path: str | Path, append: bool = False) -> Iterator[TextIO]:
    """Redirect stdout and stderr to `log_path` (line-buffered); on an exception write its traceback
    there and re-raise. `append=True` keeps the history of a job that resumes after a retry."""
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", buffering=1) as log:
        sys.stdout = sys.stderr = log
        try:
            yield log
        except BaseException:
            traceback.print_exc(file=log)
            raise
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
