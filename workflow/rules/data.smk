# Data: generate (or download) raw files, preprocess them into sorted shards, index the shards.


def generate_seed(wildcards):
    """A distinct Pythia seed per (class, chunk), below Pythia's limit of 900,000,000."""
    cfg = dataset_cfg(wildcards.dataset)
    cls = cfg["classes"].index(wildcards.cls)
    return cfg["generate"]["seed"] * 100_000 + cls * 1_000 + int(wildcards.chunk)


rule generate:
    input:
        src=SRC["generate"],
    output:
        "resources/raw/{dataset}/{cls}_{chunk}.root",
    wildcard_constraints:
        dataset="|".join(pythia_datasets()) or "(?!)",
        cls=r"[A-Za-z0-9]+",
        chunk=r"\d{3}",
    params:
        jets=lambda wc: dataset_cfg(wc.dataset)["generate"]["jets_per_chunk"],
        seed=generate_seed,
        pt_min=lambda wc: dataset_cfg(wc.dataset)["generate"]["pt_min"],
        pt_max=lambda wc: dataset_cfg(wc.dataset)["generate"]["pt_max"],
        eta_max=lambda wc: dataset_cfg(wc.dataset)["generate"]["eta_max"],
    log:
        "logs/generate/{dataset}/{cls}_{chunk}.log",
    threads: 1
    resources:
        runtime=120,
    shell:
        "salt generate --process {wildcards.cls} --jets {params.jets} --seed {params.seed}"
        " --pt-min {params.pt_min} --pt-max {params.pt_max} --eta-max {params.eta_max}"
        " --output {output} > {log} 2>&1"


def preprocess_config(wildcards):
    cfg = dataset_cfg(wildcards.dataset)
    keys = ("source", "classes", "particles", "features", "split", "options", "step")
    return as_json({k: cfg[k] for k in keys if k in cfg} | {"sort": wildcards.sort})


rule preprocess:
    input:
        raw=lambda wc: raw_files(wc.dataset)[wc.shard],
        src=SRC["preprocess"],
    output:
        train="results/shards/{dataset}/{sort}/train/{shard}.h5",
        val="results/shards/{dataset}/{sort}/val/{shard}.h5",
        test="results/shards/{dataset}/{sort}/test/{shard}.h5",
    params:
        source=lambda wc: dataset_cfg(wc.dataset)["source"],
        particles=lambda wc: dataset_cfg(wc.dataset)["particles"],
        features=lambda wc: " ".join(dataset_cfg(wc.dataset)["features"]),
        split=lambda wc: (
            f"--split {fixed_split(wc.dataset, wc.shard)}"
            if fixed_split(wc.dataset, wc.shard)
            else ""
        ),
        val=lambda wc: dataset_cfg(wc.dataset)["split"]["val"],
        test=lambda wc: dataset_cfg(wc.dataset)["split"]["test"],
        seed=lambda wc: dataset_cfg(wc.dataset)["split"]["seed"],
        step=lambda wc: dataset_cfg(wc.dataset)["step"],
        options=lambda wc: as_json(dataset_cfg(wc.dataset)["options"]),
        config=preprocess_config,
    log:
        "logs/preprocess/{dataset}/{sort}/{shard}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "salt preprocess --source {params.source} --input {input.raw:q} --sort {wildcards.sort}"
        " --particles {params.particles} --features {params.features} {params.split}"
        " --val-fraction {params.val} --test-fraction {params.test} --seed {params.seed}"
        " --step {params.step} --options {params.options:q} --config {params.config:q}"
        " --output-train {output.train} --output-val {output.val} --output-test {output.test}"
        " > {log} 2>&1"


rule manifest:
    input:
        train=lambda wc: shard_files(wc.dataset, wc.sort, "train"),
        val=lambda wc: shard_files(wc.dataset, wc.sort, "val"),
        test=lambda wc: shard_files(wc.dataset, wc.sort, "test"),
        src=SRC["manifest"],
    output:
        "results/shards/{dataset}/{sort}/manifest.json",
    params:
        normalisation=lambda wc: dataset_cfg(wc.dataset)["normalisation"],
    log:
        "logs/manifest/{dataset}/{sort}.log",
    localrule: True
    shell:
        "salt manifest --train {input.train} --val {input.val} --test {input.test}"
        " --normalisation {params.normalisation} --output {output} > {log} 2>&1"
