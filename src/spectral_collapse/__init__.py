"""Posterior collapse as automatic spectral pruning: a reproducible beta-VAE temperature scan.

Library shared by the Snakemake rule scripts, the tests and notebooks. Conventions (loss, T,
M^2, D~) follow docs/science.md section 2; see README.md for the data contracts between stages.
"""

__version__ = "0.1.0"
