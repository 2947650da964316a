"""Rule fetch_worldclim: locate or download WorldClim 2.1 (10', bio), verify the 19 pinned checksums.

Thin wrapper around spectral_collapse.worldclim.fetch; writes results/data/worldclim_verified.json.
"""

import logging

from spectral_collapse.provenance import write_json
from spectral_collapse.worldclim import fetch

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
logging.basicConfig(
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    handlers=[logging.FileHandler(snakemake.log[0], mode="w"), logging.StreamHandler()],
)
log = logging.getLogger("fetch_worldclim")

try:
    source = snakemake.params.local_source
    log.info("source: %s", source if source else f"download {snakemake.params.url}")
    record = fetch(source, snakemake.params.url, snakemake.params.download_dir)
    write_json(snakemake.output.verified, record)
    log.info("verified 19 files in %s", record["raster_dir"])
except Exception:
    log.exception("fetch_worldclim failed")
    raise
