"""Analysis of a temperature scan, from the cached per-run tables (docs/science.md sections 2-3, 5).

Small modules, each importable on its own (numpy/pandas only; scipy is imported where needed):

- ``collect``    concatenate the per-run tables of one model into the scan tables;
- ``spectrum``   the utility spectrum: best D~_K at each rank across the scan, differenced;
- ``thresholds`` collapse thresholds from the rate (and from M^2 for the linear family), which of them
                 are reported and resolved (`threshold_status`), and the mean-field exponent;
- ``agreement``  identity R^2 (with its bootstrap interval), the consecutive rank agreement and Kendall's tau
                 of thresholds and utilities;
- ``equilibrium`` which scan points are at equilibrium (loss rule, M^2 drift, stability check) and how many
                 each check removed;
- ``ablation``   Kendall's tau between the M^2 order and the single-latent ablation order, per model and seed;
- ``claims``     a claim's verdict seed by seed (holds for every seed, seed-dependent, ...);
- ``d_eff``      effective dimension d_eff(eps), PCA truncation curve, power-law fit of D~_K;
- ``model_analysis`` everything above for one model (per seed and pooled): its analysis.json;
- ``study_summary``  the study summary (results/summary.json) from every model's analysis;
- ``start_check`` does the way a point was started move its equilibrium (issue 19: the linear oracle, and
                 two scans started differently);
- ``pca_table``  the PCA table of the store's training sample (via ``spectral_collapse.pca``), with the
                 held-out weighting shifts a_k;
- ``maps``       the leading latents of a trained model on every land cell, and their correlations;
- ``synthetic``  per-run tables of the exact linear oracle, for tests and demonstrations.

Logging and JSON writing of the rule scripts live in ``spectral_collapse.rulelog`` and ``spectral_collapse.provenance``.
"""
