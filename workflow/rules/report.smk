# Tables (all datasets) and figures (one job per dataset) from the run's metrics and benchmark
# files, each output registered for `snakemake --report report.html` with a caption from
# workflow/report/. The set of outputs is fixed by the config: a table or figure whose inputs the
# run lacks (no partition sweep, no SAL-T model on kT-sorted jets) is still written, saying so.

TABLES = ["accuracy", "resources", "partitions", "summary", "binary"]
TABLE_FORMATS = ["csv", "md", "tex", "html"]  # html: what the report shows
FIGURES = [
    "roc",
    "accuracy_per_sort",
    "accuracy_vs_multiplicity",
    "latency_vs_n",
    "accuracy_vs_flops",
    "attention_maps",
]
TABLE_NAMES = {
    "accuracy": "accuracy, AUC, rejection (T1)",
    "resources": "params, FLOPs, latency, memory (T2)",
    "partitions": "partition sweep (T7)",
    "summary": "best model per quantity",
    "binary": "Top tagging and quark-gluon (T3, T4)",
}
FIGURE_NAMES = {
    "roc": "ROC curves",
    "accuracy_per_sort": "accuracy per ordering",
    "accuracy_vs_multiplicity": "accuracy vs multiplicity (Fig. 3)",
    "latency_vs_n": "latency vs N",
    "accuracy_vs_flops": "accuracy vs FLOPs",
    "attention_maps": "SAL-T attention maps",
}
# The run whose attention maps (written by its evaluation) the figure shows: SAL-T on kT-sorted jets, first seed.
ATTENTION_VARIANT, ATTENTION_SORT = "salt", "kt"


def report_targets():
    tables = [f"results/tables/{t}.{ext}" for t in TABLES for ext in TABLE_FORMATS]
    figures = [
        f"results/figures/{d}/{f}.{ext}"
        for d in config["datasets"]
        for f in FIGURES
        for ext in ("pdf", "png")
    ]
    return tables + figures


def metrics_of(dataset):
    return [f"{eval_dir(*row)}/metrics.json" for row in run_matrix() if row[0] == dataset]


def predictions_of(dataset):
    return [f"{eval_dir(*row)}/predictions.npz" for row in run_matrix() if row[0] == dataset]


def bench_of(dataset):
    return [f for f in all_bench() if f.split("/")[3] == dataset]


def attention_run(dataset):
    """(dataset, salt, kt, first seed) if the run trains it, else None (the figure says no data)."""
    rows = [
        r
        for r in run_matrix()
        if r[0] == dataset and r[1] == ATTENTION_VARIANT and r[2] == ATTENTION_SORT
    ]
    return rows[0] if rows else None


def attention_file(wildcards):
    """The attention maps `salt evaluate` wrote for that run, as the figures job's input, if any."""
    row = attention_run(wildcards.dataset)
    return {} if row is None else {"attention": f"{eval_dir(*row)}/attention.npz"}


def attention_args(wildcards):
    row = attention_run(wildcards.dataset)
    return "" if row is None else f"--attention {eval_dir(*row)}/attention.npz"


rule tables:
    input:
        metrics=all_metrics(),
        bench=all_bench(),
        src=SRC["report"],
    output:
        [
            (
                report(
                    f"results/tables/{t}.{ext}",
                    caption=f"../report/{t}.rst",
                    category="Tables",
                    labels={"table": TABLE_NAMES[t]},
                )
                if ext == "html"
                else f"results/tables/{t}.{ext}"
            )
            for t in TABLES
            for ext in TABLE_FORMATS
        ],
    log:
        "logs/report/tables.log",
    localrule: True
    shell:
        "salt report tables --metrics {input.metrics} --bench {input.bench}"
        " --output-dir results/tables > {log} 2>&1"


rule figures:
    input:
        unpack(attention_file),
        metrics=lambda wc: metrics_of(wc.dataset),
        predictions=lambda wc: predictions_of(wc.dataset),
        bench=lambda wc: bench_of(wc.dataset),
        src=SRC["report"],
    output:
        [
            report(
                f"results/figures/{{dataset}}/{f}.png",
                caption=f"../report/{f}.rst",
                category="Figures",
                subcategory="{dataset}",
                labels={"figure": FIGURE_NAMES[f], "dataset": "{dataset}"},
            )
            for f in FIGURES
        ]
        + [f"results/figures/{{dataset}}/{f}.pdf" for f in FIGURES],
    params:
        attention=attention_args,
    log:
        "logs/report/figures_{dataset}.log",
    localrule: True
    shell:
        "salt report figures --dataset {wildcards.dataset} --metrics {input.metrics} --bench {input.bench}"
        " {params.attention} --output-dir results/figures/{wildcards.dataset} > {log} 2>&1"
