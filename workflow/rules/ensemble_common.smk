# Resource estimates of the vectorized ensemble jobs (rules in ensemble.smk); builds on common.smk.


def ensemble_runtime(wildcards, attempt):
    """Runtime estimate in minutes: train_runtime's allowance (5 ms per update, doubled) for every point
    of the chunk, doubled per retry. Generous: a vectorized member costs ~1-2 ms per update on a CPU core."""
    spec = ModelSpec.from_id(wildcards.model)
    updates = training_settings(config, spec.family)["max_updates"]
    return int(10 + len(chunk_T(wildcards)) * updates * 5e-3 / 60 * 2) * attempt


def ensemble_mem_mb(wildcards, attempt):
    """Memory: the single job's allowance plus 100 MB per member (weights, Adam moments, activations)."""
    return (train_mem_mb(wildcards, 1) + 100 * len(chunk_T(wildcards))) * attempt


def ensemble_measure_runtime(wildcards, attempt):
    """Minutes: the single measure rule's 10 plus 1 per member (each member decodes both splits L + 1 times)."""
    return (10 + len(chunk_T(wildcards))) * attempt
