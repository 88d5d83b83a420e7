# Train every (dataset, variant, sort, seed) of the run matrix, then evaluate it on the test split.
# Evaluation writes the run's identity (the wildcards) into its files, so later stages read what a
# file is from its content, and the attention maps the report draws, so the report loads no model.
#
# Preemption and retries: `salt train` keeps results/models/.../checkpoint.pt (not a declared
# output, so Snakemake leaves it alone when a job fails). On SIGTERM/SIGUSR1 (SLURM time limit,
# preemption, `sbatch --signal`) it saves and exits with status 75; the next attempt of the same
# job (profiles/default's `retries: 1`, loaded for local and cluster runs alike, `--retries N`, or
# `--slurm-requeue`) resumes from it. Under the SLURM executor SLURM sees the inner Snakemake's
# status (FAILED, 1); the retry is Snakemake's.
#
# Every attempt keeps its own log, logs/train/.../seed<seed>.attempt<n>.log (n counts up across
# attempts and runs); the rule's log is a hard link to the current one. Snakemake deletes a job's
# log before each attempt, which would otherwise erase the record of an interruption.


# Settings that cannot change the weights (TrainSettings.NOT_IN_RESULT, e.g. checkpoint_minutes) reach
# `salt train` through the shell command's text, not params: Snakemake re-runs a job when a param's
# value changes, but compares only the template of the command, so changing them retrains nothing.
TRAIN_RUN_SETTINGS = as_json(plan.run_settings(config))
TRAIN_PROCESSES = plan.train_processes(config)


rule train:
    input:
        manifest=lambda wc: manifest_file(wc.dataset, wc.sort),
        train=lambda wc: shard_files(wc.dataset, wc.sort, "train"),
        val=lambda wc: shard_files(wc.dataset, wc.sort, "val"),
        src=SRC["train"],
    output:
        model="results/models/{dataset}/{variant}/{sort}/seed{seed}/model.pt",
        history="results/models/{dataset}/{variant}/{sort}/seed{seed}/history.csv",
    params:
        spec=lambda wc: as_json(variant_spec(wc.dataset, wc.variant)),
        train=lambda wc: as_json(plan.train_settings(config, wc.variant)),
        device=train_device(),
        outdir=lambda wc: model_dir(wc.dataset, wc.variant, wc.sort, wc.seed),
        nproc=TRAIN_PROCESSES,
        threads_per_process=lambda wc, threads: max(1, threads // TRAIN_PROCESSES),
    log:
        "logs/train/{dataset}/{variant}/{sort}/seed{seed}.log",
    threads: config["train"]["threads"] * TRAIN_PROCESSES
    resources:
        gpu=TRAIN_PROCESSES if config["use_gpu"] else 0,
        mem_mb=8000,
        runtime=720,
    shell:
        "a={log:q}; a=${{a%.log}}.attempt; n=1; while [ -e $a$n.log ]; do n=$((n + 1)); done;"
        " : > $a$n.log && ln -f $a$n.log {log:q};"
        " salt train --manifest {input.manifest} --spec {params.spec:q} --train-config {params.train:q}"
        " --run-settings {TRAIN_RUN_SETTINGS:q}"
        " --seed {wildcards.seed} --device {params.device} --threads {params.threads_per_process}"
        " --nproc {params.nproc} --output-dir {params.outdir} > {log} 2>&1"


rule evaluate:
    input:
        model=rules.train.output.model,
        manifest=lambda wc: manifest_file(wc.dataset, wc.sort),
        test=lambda wc: shard_files(wc.dataset, wc.sort, "test"),
        src=SRC["evaluate"],
    output:
        metrics="results/eval/{dataset}/{variant}/{sort}/seed{seed}/metrics.json",
        predictions="results/eval/{dataset}/{variant}/{sort}/seed{seed}/predictions.npz",
        attention="results/eval/{dataset}/{variant}/{sort}/seed{seed}/attention.npz",
    params:
        device=train_device(),
        backend=config["evaluate_backend"],
    log:
        "logs/evaluate/{dataset}/{variant}/{sort}/seed{seed}.log",
    threads: config["train"]["threads"]
    resources:
        gpu=1 if config["use_gpu"] else 0,
        mem_mb=8000,
        runtime=60,
    shell:
        "salt evaluate --model {input.model} --manifest {input.manifest} --dataset {wildcards.dataset}"
        " --variant {wildcards.variant} --sort {wildcards.sort} --seed {wildcards.seed} --device {params.device}"
        " --backend {params.backend} --threads {threads} --metrics {output.metrics}"
        " --predictions {output.predictions} --attention {output.attention} > {log} 2>&1"
