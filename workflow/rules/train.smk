# Stage 3-4: one beta-VAE training job per (model, T, seed); measurement as a separate cheap rule,
# so that changing a measurement never retrains.


localrules:
    training,


rule train:
    """Train one beta-VAE at one scan point; resumes from its checkpoint folder when retried."""
    input:
        store=STORE,
    output:
        model=f"{RUN_DIR}/model.pt",
        summary=f"{RUN_DIR}/train.json",
    params:
        settings=model_settings,
        checkpoint_dir=f"{RUN_DIR}/checkpoints",
        log_dir=f"{RUN_DIR}/logs",
    log:
        "results/logs/train/{model}/T{T}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{model}/T{T}/seed{seed}.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=train_runtime,
        mem_mb=train_mem_mb,
    script:
        "../../scripts/train_run.py"


rule measure:
    """Per-latent measurements and the ranked-pruning curve of one trained model (test and validation)."""
    input:
        store=STORE,
        model=f"{RUN_DIR}/model.pt",
        summary=f"{RUN_DIR}/train.json",
        verified=VERIFIED,
    output:
        latents=f"{RUN_DIR}/latents.parquet",
        pruning=f"{RUN_DIR}/pruning.parquet",
        run=f"{RUN_DIR}/run.json",
    log:
        "results/logs/measure/{model}/T{T}/seed{seed}.log",
    benchmark:
        "results/benchmarks/measure/{model}/T{T}/seed{seed}.tsv"
    conda:
        "../../envs/study.yaml"
    resources:
        runtime=10,
        mem_mb=3000,
    script:
        "../../scripts/measure_run.py"


rule training:
    """Plain-name target: every trained and measured scan point."""
    input:
        [run_tables(model) for model in MODELS],
