# Stage 3-4: one training job per group of scan points of one model and seed (scan.points_per_job points;
# default one: one Lightning job per scan point), and the measurement of the trained group as a separate
# cheap rule, so that changing a measurement never retrains.


localrules:
    training,


rule train:
    """Train one group of scan points (one ensemble member each); resumes from its checkpoint folder."""
    input:
        store=STORE,
    output:
        model=f"{RUN_DIR}/model.pt",
        record=f"{RUN_DIR}/train.json",
    params:
        T=group_T,
        settings=job_settings,
        checkpoint_dir=f"{RUN_DIR}/checkpoints",
        log_dir=f"{RUN_DIR}/logs",
    log:
        "results/logs/train/{model}/{group}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{model}/{group}/seed{seed}.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=train_runtime,
        mem_mb=train_mem_mb,
    script:
        "../../scripts/train_group.py"


rule measure:
    """Per-latent measurements and the ranked-pruning curve of every member of a trained group."""
    input:
        store=STORE,
        model=f"{RUN_DIR}/model.pt",
        record=f"{RUN_DIR}/train.json",
        verified=VERIFIED,
    output:
        latents=f"{RUN_DIR}/latents.parquet",
        pruning=f"{RUN_DIR}/pruning.parquet",
        run=f"{RUN_DIR}/run.json",
    params:
        splits=measured_splits,
        active_threshold=config["analysis"]["active_threshold"],
        stability=config["analysis"]["stability_check"],
    log:
        "results/logs/measure/{model}/{group}/seed{seed}.log",
    benchmark:
        "results/benchmarks/measure/{model}/{group}/seed{seed}.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=measure_runtime,
        mem_mb=measure_mem_mb,
    script:
        "../../scripts/measure_group.py"


rule training:
    """Plain-name target: every trained and measured scan point."""
    input:
        [run_tables(model, "run.json") for model in MODELS],


# What the run books (issue 22): printed by every invocation that plans jobs, the dry run included.
if workflow.is_main_process:
    log_booking()
