"""Everything a rule script prints or logs goes to its rule's log file: one set-up for every rule script.

Lightning and the training loop print progress to stdout/stderr, the other stages log with ``logging``;
inside a Snakemake job both belong in the rule's ``log:`` file, together with the traceback when the job
fails. ``rule_log`` redirects stdout and stderr to that file and sends ``logging`` there too, once.

What the person who started the workflow should see while a long job runs (a training job's progress line)
goes to ``terminal_stream()``: the stderr the script had before the redirection, i.e. the terminal of a local
``snakemake`` run, or the job's SLURM output file on a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path
from typing import Iterator, TextIO

_terminal: TextIO | None = None


def terminal_stream() -> TextIO | None:
    """Inside ``rule_log``: the stderr from before the redirection (where a person watching the run looks);
    None outside it (then nothing is redirected, and stdout already reaches whoever runs the code)."""
    return _terminal


def permission_message(exc: PermissionError) -> str:
    """One line naming the path that could not be written or read, and the fix."""
    path = exc.filename or "a file of this job"
    return (f"Permission denied: {path} ({exc.strerror or exc}). Make it and its folder writable by you "
            f"(e.g. chmod -R u+w {Path(str(path)).parent}), or run in a copy of the project that you own.")


@contextlib.contextmanager
def rule_log(log_path: str | Path, name: str, append: bool = False) -> Iterator[logging.Logger]:
    """Within the block, stdout, stderr and ``logging`` (INFO and up, timestamped) write to ``log_path``
    (line-buffered); an exception's traceback is written there and the exception re-raised. ``append=True``
    keeps the history of a job that resumes after a retry."""
    global _terminal
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", buffering=1) as log:
        _terminal = sys.stderr
        sys.stdout = sys.stderr = log
        handler = logging.StreamHandler(log)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            handlers=[handler], force=True)
        logging.captureWarnings(True)
        logging.getLogger("fontTools").setLevel(logging.WARNING)  # a line per font table of every PDF: noise
        try:
            yield logging.getLogger(name)
        except PermissionError as exc:  # a fault of the filesystem, not of the code: one line, no traceback
            message = permission_message(exc)
            print(message, file=log)
            raise SystemExit(message) from None
        except BaseException:
            traceback.print_exc(file=log)
            raise
        finally:
            logging.getLogger().removeHandler(handler)
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            _terminal = None
