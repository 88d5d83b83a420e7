# Latency, throughput and memory of each variant over a particle-count sweep, per device.


rule bench:
    input:
        src=SRC["bench"],
    output:
        "results/bench/{device}/{dataset}/{variant}.json",
    params:
        spec=lambda wc: as_json(variant_spec(wc.dataset, wc.variant)),
        particles=" ".join(str(n) for n in config["bench"]["particles"]),
        batches=" ".join(str(b) for b in config["bench"]["batch_sizes"]),
        threads=" ".join(str(t) for t in config["bench"]["threads"]),
        repeats=config["bench"]["repeats"],
    log:
        "logs/bench/{device}/{dataset}/{variant}.log",
    threads: 1
    resources:
        gpu=lambda wc: 1 if wc.device == "cuda" else 0,
        runtime=60,
    shell:
        "salt bench --spec {params.spec:q} --device {wildcards.device} --sweep-particles {params.particles}"
        " --batch {params.batches} --threads {params.threads} --repeats {params.repeats}"
        " --output {output} > {log} 2>&1"
