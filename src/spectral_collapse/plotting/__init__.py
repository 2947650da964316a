"""Seaborn figures of the study (docs/science.md section 5), drawn from the cached analysis tables only.

One module per figure (cascade, spectra, meanfield, truncation, maps), each with a `plot_*` function
returning a matplotlib Figure; `style` holds the shared look and `save_figure` (PNG + PDF).
Importing this package selects the non-interactive Agg backend.
"""

import matplotlib

matplotlib.use("Agg")
