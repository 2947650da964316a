"""Small I/O helpers shared by the rule scripts of the analysis and figure stages."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any


def setup_logging(log_path: str | Path, name: str) -> logging.Logger:
    """Log to the rule's log file (overwritten) and to stderr."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(log_path, mode="w"), logging.StreamHandler()],
        force=True,
    )
    logging.captureWarnings(True)
    return logging.getLogger(name)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
