# Latency, throughput and peak memory of each variant over a particle-count sweep, per device:
# one job per (device, dataset, variant) -> results/bench/{device}/{dataset}/{variant}.json.
#
# GPU. Only {device}=cuda jobs ask for a GPU (resources gpu=1); which devices run is config
# (bench.devices), so the CPU fallback is `devices: [cpu]`, never `--resources gpu=0` (that breaks
# under SLURM: the in-job Snakemake still sees gpu=1 and its inner srun fails with "Invalid
# generic resource (gres) specification"). A cuda job on a machine without a GPU fails with a clear
# error: a CPU figure filed under cuda would be a lie.
#
# Running alone. Latency on a shared machine is distorted by whatever runs beside it, so on a
# LOCAL run a benchmark job claims every core: its `threads` are larger than any machine and
# Snakemake caps a rule's threads at --cores, so no other job is scheduled next to it (a bench job
# itself measures with the thread counts of bench.threads, not with this number). On a CLUSTER the
# job has its own allocation and asks for bench.cluster_cpus cores (sbatch --cpus-per-task; `threads:
# 0` then means those cores); a cuda job's CPUs come from the profile's cpus_per_gpu where set.
# Why not the alternatives: a custom resource limited to 1 in profiles/default would only keep
# benchmarks apart from each other, not from training jobs, and profiles/default's keys override the
# cluster profile's per key (a `resources:` there would also throttle SLURM); `threads:
# workflow.cores` would become --cpus-per-task on SLURM, where --cores means nothing.
# Check: `snakemake -n -c2` shows threads: 2 for bench jobs; under the SLURM executor
# (workflow.local_exec is False) they get cluster_cpus, capped by the profile's max-threads
# (2 in the test cluster's tests/slurm/site.yaml). A dry run always uses the local (dry-run)
# executor, so it shows the local value even with --profile slurm.

BENCH = config["bench"]
BENCH_EVERY_CORE = 1_000_000  # capped by Snakemake at --cores (and --max-threads)


def bench_threads(wildcards):
    return BENCH_EVERY_CORE if workflow.local_exec else BENCH["cluster_cpus"]


def bench_memory_budget(wildcards):
    budget = BENCH["memory_budget_gb"][wildcards.device]
    return "" if budget is None else f"--memory-budget-gb {budget}"


def bench_options():
    options = [f"--impl {BENCH['impl']}", f"--time-budget-s {BENCH['time_budget_s']}"]
    if BENCH["chunk_rows"] is not None:
        options.append(f"--chunk-rows {BENCH['chunk_rows']}")
    if not BENCH["tune_allocator"]:
        options.append("--no-tune-allocator")
    return " ".join(options)


def spaced(values):
    return " ".join(str(v) for v in values)


rule bench:
    input:
        src=SRC["bench"],
    output:
        "results/bench/{device}/{dataset}/{variant}.json",
    params:
        spec=lambda wc: as_json(variant_spec(wc.dataset, wc.variant)),
        particles=spaced(BENCH["particles"]),
        batches=spaced(BENCH["batch_sizes"]),
        threads=spaced(BENCH["threads"]),
        repeats=BENCH["repeats"],
        warmup=BENCH["warmup"],
        backends=lambda wc: spaced(BENCH["backends"][wc.device]),
        precisions=lambda wc: spaced(BENCH["precisions"][wc.device]),
        memory_budget=bench_memory_budget,
        options=bench_options(),
    log:
        "logs/bench/{device}/{dataset}/{variant}.log",
    threads: bench_threads
    resources:
        gpu=lambda wc: 1 if wc.device == "cuda" else 0,
        runtime=60,
    shell:
        "salt bench --spec {params.spec:q} --variant {wildcards.variant} --dataset {wildcards.dataset}"
        " --device {wildcards.device} --sweep-particles {params.particles} --batch {params.batches}"
        " --threads {params.threads} --backends {params.backends} --precisions {params.precisions}"
        " --repeats {params.repeats} --warmup {params.warmup} {params.memory_budget} {params.options}"
        " --output {output} > {log} 2>&1"
