# Shared helpers: the run matrix, file lists per stage, source-file inputs, device choice.
import json
from pathlib import Path


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    variant=r"[A-Za-z0-9_]+",
    sort=r"kt|pt|deltaR|none|radius",
    seed=r"\d+",
    split=r"train|val|test",
    shard=r"[A-Za-z0-9_.-]+",
    device=r"cpu|cuda",


SPLITS = ("train", "val", "test")


def check_config():
    """Cross-references the schema cannot express; fail early with the offending key."""
    for name in config["datasets"]:
        if name not in config["dataset"]:
            raise ValueError(f"config: datasets lists {name!r}, but dataset.{name} is not defined")
    for i, run in enumerate(config["runs"]):
        for v in run["variants"]:
            if v not in config["variants"]:
                raise ValueError(f"config: runs[{i}] names variant {v!r}, not defined under variants")
        for d in run.get("datasets", []):
            if d not in config["dataset"]:
                raise ValueError(f"config: runs[{i}] names dataset {d!r}, not defined under dataset")
    for name, ds in config["dataset"].items():
        if ds["source"] == "pythia" and "generate" not in ds:
            raise ValueError(f"config: dataset.{name} has source pythia but no generate: block")


check_config()


# ---------------------------------------------------------------------------
# Source files each stage depends on: editing them re-runs that stage (and what follows),
# nothing upstream. Snakemake's code trigger only sees the shell text, so they are inputs.


def src(*names):
    return [f"salt/{n}.py" for n in names]


MODEL_SRC = [
    str(p)
    for p in sorted(Path("salt/models").glob("*.py"))
    if p.stem not in ("cost", "reference")
]
SRC = {
    "generate": src("data/sources/pythia", "atomic"),
    "preprocess": src(
        "data/preprocess",
        "data/kinematics",
        "data/record",
        "data/shards",
        "data/sources/__init__",
        "data/sources/jetclass",
    ),
    "manifest": src("data/shards"),
    "train": src("train", "data/loader") + MODEL_SRC,
    "evaluate": src("evaluate", "metrics", "data/loader") + MODEL_SRC,
    "bench": src("bench", "models/cost") + MODEL_SRC,
    "report": [str(p) for p in sorted(Path("salt/report").glob("*.py"))] + src("metrics"),
}


# ---------------------------------------------------------------------------
# The run matrix


def run_matrix():
    """Every (dataset, variant, sort, seed) to train and evaluate."""
    rows = []
    for run in config["runs"]:
        for d in run.get("datasets", config["datasets"]):
            if d not in config["datasets"]:
                continue
            for v in run["variants"]:
                for s in run["sorts"]:
                    for seed in config["seeds"]:
                        row = (d, v, s, seed)
                        if row not in rows:
                            rows.append(row)
    return rows


def sorts_of(dataset):
    return sorted({s for d, _, s, _ in run_matrix() if d == dataset})


def variants_of(dataset):
    return sorted({v for d, v, _, _ in run_matrix() if d == dataset})


# ---------------------------------------------------------------------------
# Raw files and shards


def dataset_cfg(dataset):
    return config["dataset"][dataset]


def pythia_datasets():
    return [d for d, c in config["dataset"].items() if c["source"] == "pythia"]


def raw_files(dataset):
    """{shard name: raw file} of a dataset; one preprocessing job per entry."""
    cfg = dataset_cfg(dataset)
    if cfg["source"] == "pythia":
        g = cfg["generate"]
        return {
            f"{cls}_{chunk:03d}": f"resources/raw/{dataset}/{cls}_{chunk:03d}.root"
            for cls in cfg["classes"]
            for chunk in range(g["chunks"])
        }
    raise ValueError(f"dataset {dataset!r}: source {cfg['source']!r} has no raw-file listing yet")


def fixed_split(dataset, shard):
    """The split a raw file belongs to, or None when objects are split at random."""
    return None


def shard_files(dataset, sort, split):
    return [f"results/shards/{dataset}/{sort}/{split}/{s}.h5" for s in raw_files(dataset)]


def manifest_file(dataset, sort):
    return f"results/shards/{dataset}/{sort}/manifest.json"


# ---------------------------------------------------------------------------
# Models


def variant_spec(dataset, variant):
    """The model spec of a variant on a dataset: its knobs plus the dataset's shape."""
    cfg = dataset_cfg(dataset)
    spec = dict(config["variants"][variant])
    spec["particles"] = cfg["particles"]
    spec["features"] = len(cfg["features"])
    spec["classes"] = len(cfg["classes"])
    return spec


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def train_device():
    return "cuda" if config["use_gpu"] else "cpu"


# ---------------------------------------------------------------------------
# Targets


def model_dir(d, v, s, seed):
    return f"results/models/{d}/{v}/{s}/seed{seed}"


def eval_dir(d, v, s, seed):
    return f"results/eval/{d}/{v}/{s}/seed{seed}"


def all_metrics():
    return [f"{eval_dir(*row)}/metrics.json" for row in run_matrix()]


def all_bench():
    return [
        f"results/bench/{dev}/{d}/{v}.json"
        for dev in config["bench"]["devices"]
        for d in config["datasets"]
        for v in variants_of(d)
    ]


def final_targets():
    return report_targets()
