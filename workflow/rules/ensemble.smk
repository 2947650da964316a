# Stage 3-4, vectorized (config scan.points_per_job > 1): one job trains a chunk of scan points of one
# model and seed as a batched ensemble (one optimizer step for all members, each with its own beta);
# a separate cheap rule measures every member, so that changing a measurement never retrains. run_tables() in common.smk points the analysis at these outputs instead
# of the per-point results/runs/... folders; with points_per_job = 1 (default) these rules are unused.


include: "ensemble_common.smk"


rule train_ensemble:
    """Train the scan points of one chunk as one vectorized ensemble job; resumes from its checkpoint folder."""
    input:
        store=STORE,
    output:
        model=f"{ENSEMBLE_DIR}/model.pt",
        summary=f"{ENSEMBLE_DIR}/train.json",
    params:
        T=chunk_T,
        settings=model_settings,
        checkpoint_dir=f"{ENSEMBLE_DIR}/checkpoints",
        log_dir=f"{ENSEMBLE_DIR}/logs",
    log:
        "results/logs/train_ensemble/{model}/seed{seed}/chunk{chunk}.log",
    benchmark:
        "results/benchmarks/train_ensemble/{model}/seed{seed}/chunk{chunk}.tsv"
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        runtime=ensemble_runtime,
        mem_mb=ensemble_mem_mb,
    script:
        "../../scripts/train_ensemble.py"


rule measure_ensemble:
    """Per-member latents, pruning curve and run.json of a trained chunk (test and validation); never retrains."""
    input:
        store=STORE,
        model=f"{ENSEMBLE_DIR}/model.pt",
        summary=f"{ENSEMBLE_DIR}/train.json",
        verified=VERIFIED,
    output:
        latents=f"{ENSEMBLE_DIR}/latents.parquet",
        pruning=f"{ENSEMBLE_DIR}/pruning.parquet",
        run=f"{ENSEMBLE_DIR}/run.json",
    log:
        "results/logs/measure_ensemble/{model}/seed{seed}/chunk{chunk}.log",
    benchmark:
        "results/benchmarks/measure_ensemble/{model}/seed{seed}/chunk{chunk}.tsv"
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        runtime=ensemble_measure_runtime,
        mem_mb=ensemble_mem_mb,
    script:
        "../../scripts/measure_ensemble.py"
