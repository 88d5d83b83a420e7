# Data: generate or download raw files, extract archives, preprocess each raw file into sorted
# shards, index the shards.
#
# Downloads are local rules: login nodes have network, compute nodes often do not. Where the
# files come from (official URL, download.base_url mirror, download.local_dir staging area) and
# the retry budget are not params, so switching mirror never re-downloads a verified archive;
# an explicit md5 override is a param (other expected bytes are another file). A killed download
# leaves <archive>.part (resumed next time), and a file without a published checksum gets its md5
# pinned in <archive>.md5; neither is a declared output, so Snakemake never deletes them.
# Download and extraction take no source-file inputs: their outputs are verified or byte-exact
# copies, and editing salt/data/download.py must not re-fetch 190 GB.


rule generate:
    input:
        src=SRC["generate"],
    output:
        "resources/raw/{dataset}/{cls}_{chunk}.root",
    wildcard_constraints:
        dataset=alternation(plan.generated_datasets(config)),
        cls=r"[A-Za-z0-9]+",
        chunk=r"\d{3}",
    params:
        jets=lambda wc: dataset_cfg(wc.dataset)["generate"]["jets_per_chunk"],
        seed=lambda wc: plan.generate_seed(config, wc.dataset, wc.cls, wc.chunk),
        pt_min=lambda wc: dataset_cfg(wc.dataset)["generate"]["pt_min"],
        pt_max=lambda wc: dataset_cfg(wc.dataset)["generate"]["pt_max"],
        eta_max=lambda wc: dataset_cfg(wc.dataset)["generate"]["eta_max"],
        part_pt_min=lambda wc: dataset_cfg(wc.dataset)["generate"]["part_pt_min"],
        pthat_min=lambda wc: (
            ""
            if dataset_cfg(wc.dataset)["generate"]["pthat_min"] is None
            else f"--pthat-min {dataset_cfg(wc.dataset)['generate']['pthat_min']}"
        ),
    log:
        "logs/generate/{dataset}/{cls}_{chunk}.log",
    threads: 1
    resources:
        runtime=120,
    shell:
        "salt generate --process {wildcards.cls} --jets {params.jets} --seed {params.seed}"
        " --pt-min {params.pt_min} --pt-max {params.pt_max} --eta-max {params.eta_max}"
        " --part-pt-min {params.part_pt_min} {params.pthat_min}"
        " --output {output} > {log} 2>&1"


rule download:
    output:
        "resources/raw/{dataset}/archives/{archive}",
    wildcard_constraints:
        dataset=alternation(plan.downloaded_datasets(config)),
        archive=alternation(
            f for d in plan.downloaded_datasets(config) for f in dataset_cfg(d)["download"]["files"]
        ),
    params:
        source=lambda wc: dataset_cfg(wc.dataset)["source"],
        md5=lambda wc: md5_override_args(wc.dataset, wc.archive),
    log:
        "logs/download/{dataset}/{archive}.log",
    localrule: True
    resources:
        downloads=1,  # `--resources downloads=2` caps parallel downloads (Zenodo throttles)
    run:
        where = download_source_args(wildcards.dataset)
        shell(
            "salt download --dataset {params.source} --file {wildcards.archive:q} {params.md5} {where}"
            " --output {output:q} > {log:q} 2>&1"
        )


# Members known in advance (JetClass val/test ROOT files): one job per member, which reads the
# tar's headers (it seeks over the data of a plain tar) and copies out that member only; every
# member of the archive is safety-checked first.
rule extract_member:
    input:
        archive=lambda wc: archive_path(wc.dataset, archive_of_member(wc.dataset, wc.member)),
    output:
        "resources/raw/{dataset}/extracted/{member}",
    wildcard_constraints:
        dataset=alternation(d for d, _, _ in known_archives(folders=False)),
        member=alternation(m for _, _, m in known_archives(folders=False)),
    params:
        outdir=lambda wc: extracted_dir(wc.dataset),
        glob=lambda wc: glob_escape(wc.member),
    log:
        "logs/extract/{dataset}/{member}.log",
    resources:
        runtime=30,
    shell:
        "salt extract {input.archive:q} --output-dir {params.outdir:q} --members-glob {params.glob:q}"
        " --done {log:q}.done.json > {log:q} 2>&1"


# Folders known in advance (ModelNet10/<class>/<split>, read as one unit each).
rule extract_folder:
    input:
        archive=lambda wc: archive_path(wc.dataset, archive_of_member(wc.dataset, wc.member)),
    output:
        directory("resources/raw/{dataset}/extracted/{member}"),
    wildcard_constraints:
        dataset=alternation(d for d, _, _ in known_archives(folders=True)),
        member=alternation(m for _, _, m in known_archives(folders=True)),
    params:
        outdir=lambda wc: extracted_dir(wc.dataset),
        glob=lambda wc: glob_escape(wc.member) + "/*",
    log:
        "logs/extract/{dataset}/{member}.log",
    resources:
        runtime=30,
    shell:
        "salt extract {input.archive:q} --output-dir {params.outdir:q} --members-glob {params.glob:q}"
        " --done {log:q}.done.json > {log:q} 2>&1"


def h5_keep(wildcards):
    """Keep only the HDF5 datasets the reader uses (hls4ml: the jet images go as each member is extracted)."""
    keep = plan.source_of(config, wildcards.dataset).keep_on_extraction
    return "--h5-keep " + ",".join(keep) if keep else ""


# Archives whose member names are only known once extracted (HLS4ML's jetImage_<k>_150p_<a>_<b>.h5,
# the JetClass train parts): extract the whole archive; the listing it writes last is the
# checkpoint's output, and raw_files() reads it, so preprocessing is still one job per raw file.
checkpoint extract_archive:
    input:
        archive=lambda wc: archive_path(wc.dataset, wc.archive),
    output:
        "resources/raw/{dataset}/listings/{archive}.json",
    wildcard_constraints:
        dataset=alternation(plan.downloaded_datasets(config)),
        archive=alternation(listed_archives()),
    params:
        outdir=lambda wc: extracted_dir(wc.dataset),
        globs=lambda wc: " ".join(
            f"--members-glob {shlex.quote(g)}"
            for g in dataset_cfg(wc.dataset)["download"].get("members", [])
        ),
        h5_keep=h5_keep,
    log:
        "logs/extract/{dataset}/{archive}.log",
    resources:
        runtime=240,
    shell:
        "salt extract {input.archive:q} --output-dir {params.outdir:q} {params.globs} {params.h5_keep}"
        " --done {output:q} > {log:q} 2>&1"


rule preprocess:
    input:
        raw=lambda wc: raw_files(wc.dataset)[wc.shard],
        listing=lambda wc: raw_listing(wc.dataset, wc.shard),
        src=lambda wc: preprocess_src(wc.dataset, wc.sort),
    output:
        train="results/shards/{dataset}/{sort}/train/{shard}.h5",
        val="results/shards/{dataset}/{sort}/val/{shard}.h5",
        test="results/shards/{dataset}/{sort}/test/{shard}.h5",
    params:
        source=lambda wc: dataset_cfg(wc.dataset)["source"],
        particles=lambda wc: dataset_cfg(wc.dataset)["particles"],
        features=lambda wc: " ".join(dataset_cfg(wc.dataset)["features"]),
        truncation=lambda wc: dataset_cfg(wc.dataset)["truncation"],
        split=lambda wc: (
            f"--split {fixed_split(wc.dataset, wc.shard)}"
            if fixed_split(wc.dataset, wc.shard)
            else ""
        ),
        val=lambda wc: dataset_cfg(wc.dataset)["split"]["val"],
        test=lambda wc: dataset_cfg(wc.dataset)["split"]["test"],
        seed=lambda wc: dataset_cfg(wc.dataset)["split"]["seed"],
        options=lambda wc: as_json(plan.reader_options(config, wc.dataset)),
        classes=lambda wc: " ".join(shlex.quote(c) for c in dataset_cfg(wc.dataset)["classes"]),
    log:
        "logs/preprocess/{dataset}/{sort}/{shard}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    run:
        # dataset.<name>.step (objects read at a time) bounds memory and cannot change a shard, so it
        # is not a param: changing it re-runs nothing (Snakemake compares params, and this code's text)
        step = dataset_cfg(wildcards.dataset)["step"]
        shell(
            "salt preprocess --source {params.source} --input {input.raw:q} --sort {wildcards.sort}"
            " --particles {params.particles} --truncation {params.truncation} --features {params.features}"
            " {params.split}"
            " --val-fraction {params.val} --test-fraction {params.test} --seed {params.seed}"
            " --step {step} --options {params.options:q} --classes {params.classes}"
            " --output-train {output.train} --output-val {output.val} --output-test {output.test}"
            " > {log} 2>&1"
        )


rule manifest:
    input:
        train=lambda wc: shard_files(wc.dataset, wc.sort, "train"),
        val=lambda wc: shard_files(wc.dataset, wc.sort, "val"),
        test=lambda wc: shard_files(wc.dataset, wc.sort, "test"),
        # every extraction listing up front, so that all checkpoint extractions run at once
        # (the shard lists wait on them one at a time)
        listings=lambda wc: dataset_listings(wc.dataset),
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
