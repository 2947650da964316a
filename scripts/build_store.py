"""Rule build_store: tile the verified rasters into the Zarr store and write its JSON summary.

Thin wrapper around spectral_collapse.store.build_store (layout: docs/contracts.md section 2).
"""

import json
import logging
import time
from pathlib import Path

from spectral_collapse.provenance import write_json
from spectral_collapse.store import build_store

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
logging.basicConfig(
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    handlers=[logging.FileHandler(snakemake.log[0], mode="w"), logging.StreamHandler()],
)
log = logging.getLogger("build_store")

try:
    start = time.perf_counter()
    verified = json.loads(Path(snakemake.input.verified).read_text())
    settings = dict(snakemake.params.store)
    log.info("building %s from %s with %s", snakemake.output.store, verified["raster_dir"], settings)
    summary = build_store(verified["raster_dir"], snakemake.output.store, settings, sha256=verified["files"])
    summary["store"] = str(snakemake.output.store)
    summary["sha256"] = verified["files"]
    write_json(snakemake.output.report, summary)
    log.info("n_land=%d n_blocks=%d blocks=%s cells=%s V=%.6f in %.1f s", summary["n_land"], summary["n_blocks"],
             summary["blocks"], summary["cells"], summary["V"], time.perf_counter() - start)
except Exception:
    log.exception("build_store failed")
    raise
