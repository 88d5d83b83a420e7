# Shared helpers: the run matrix, file lists per stage, source-file inputs, device choice.
import fnmatch
import importlib
import json
import os
import re
import shlex
from pathlib import Path

from salt.cli import SUBCOMMANDS
from salt.configcheck import check_datasets, check_variants
from salt.data import download as downloads
from salt.data.archive import glob_escape
from salt.data.clustering import SORTS as CLUSTERING_SORTS
from salt.data.kinematics import JET_SORTS, POINT_SORTS
from salt.data.sources import SOURCES
from salt.dependencies import NOT_IN_RESULT, source_files
from salt.training.settings import TrainSettings


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    variant=r"[A-Za-z0-9_]+",
    sort="|".join(sorted(set(JET_SORTS) | set(POINT_SORTS))),
    seed=r"\d+",
    split=r"train|val|test",
    shard=r"[A-Za-z0-9_.-]+",
    device=r"cpu|cuda",


SPLITS = ("train", "val", "test")


def check_config():
    """Cross-references the schema cannot express; fail early with the offending key."""
    check_datasets(config)
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
        if ds["source"] != "pythia":
            check_download(name, ds)
        check_dataset_shape(name, ds)
    for i, run in enumerate(config["runs"]):
        for d in run.get("datasets", config["datasets"]):
            if d not in config["dataset"]:
                continue
            kind = source_kind(config["dataset"][d]["source"])
            allowed = POINT_SORTS if kind == "points" else JET_SORTS
            bad = [s for s in run["sorts"] if s not in allowed]
            if bad:
                what = "point clouds" if kind == "points" else "jets"
                raise ValueError(
                    f"config: runs[{i}] sorts dataset {d!r} ({what}) by {bad}; {what} can be sorted by "
                    f"{sorted(allowed)} (give the run a datasets: list to keep jet sorts off point clouds)"
                )


def source_kind(source):
    """"jet" or "points": what the source's records hold (decides the valid sorts and features)."""
    return importlib.import_module(SOURCES[source]).KIND


def check_download(name, ds):
    """A downloaded dataset names known files of its source, and its globs select something."""
    where = f"config: dataset.{name}"
    if "download" not in ds:
        raise ValueError(f"{where} (source {ds['source']}) needs a download: block with files: [...]")
    dl = ds["download"]
    table = downloads.DATASETS[ds["source"]].files
    unknown = [f for f in dl["files"] if f not in table]
    if unknown:
        raise ValueError(f"{where}.download.files: {unknown} are not files of {ds['source']}; expected some of {sorted(table)}")
    if dl.get("base_url") and dl.get("local_dir"):
        raise ValueError(f"{where}.download: give base_url or local_dir, not both")
    extra = sorted(set(dl.get("md5", {})) - set(dl["files"]))
    if extra:
        raise ValueError(f"{where}.download.md5 overrides files not in download.files: {extra}")
    for archive in dl["files"]:
        known = table[archive].members
        if known is not None and not any(glob_selects(dl.get("members"), m) for m in known):
            raise ValueError(f"{where}.download.members {dl.get('members')} select none of the members of {archive} "
                             f"(e.g. {known[0]!r})")
    if ds["source"] == "modelnet10":
        folders = {m.split("/")[1] for a in dl["files"] for m in table[a].members or ()}
        unknown = [c for c in ds["classes"] if c not in folders]
        if unknown:
            raise ValueError(f"{where}.classes {unknown} are not ModelNet10 classes {sorted(folders)}")


def glob_selects(globs, member):
    """Whether download.members (fnmatch globs, '*' crosses '/') selects a member; no globs: all."""
    return not globs or any(fnmatch.fnmatchcase(member.rstrip("/"), g) for g in globs)


def check_dataset_shape(name, ds):
    """Features and classes that the source can actually deliver."""
    if source_kind(ds["source"]) == "points":
        bad = [f for f in ds.get("features", []) if f not in ("x", "y", "z")]
        if bad:
            raise ValueError(f"config: dataset.{name}.features {bad}: point clouds have the features x, y, z")
    if ds["source"] == "jetclass":
        labels = ds.get("options", {}).get("label_branches") or downloads.JETCLASS_PROCESSES
        if len(ds["classes"]) != len(labels):
            raise ValueError(f"config: dataset.{name}.classes names {len(ds['classes'])} classes; the files have "
                             f"{len(labels)} label branches (QCD, Hbb, Hcc, Hgg, H4q, Hqql, Zqq, Wqq, Tbqq, Tbl)")
    if ds["source"] in ("hls4ml", "toptagging", "quarkgluon"):
        names = importlib.import_module(SOURCES[ds["source"]]).CLASS_NAMES
        if list(ds["classes"]) != list(names):
            raise ValueError(f"config: dataset.{name}.classes must be {list(names)} (the files' label order)")
    if ds.get("sigmoid") and len(ds["classes"]) != 2:
        raise ValueError(f"config: dataset.{name}.sigmoid needs exactly 2 classes, got {ds['classes']}")


check_config()


# ---------------------------------------------------------------------------
# Source files each stage depends on: editing them re-runs that stage (and what follows),
# nothing upstream. Snakemake's code trigger only sees the shell text, so they are inputs,
# derived from the imports of the stage's module (salt/dependencies.py), never listed by hand.


def stage_src(stage, *modules, exclude=()):
    """The salt/ files `salt <stage>` runs: its module, `modules`, and everything they import
    (but `exclude` and what only they import)."""
    return source_files([SUBCOMMANDS[stage][0], *modules], exclude=NOT_IN_RESULT + tuple(exclude))


# kinematics.py imports the clustering code, which only the clustering-history sorts run: it is a
# source of those sorts' preprocessing, not of generation or of the other sorts
CLUSTERING = "salt.data.clustering"
SRC = {stage: stage_src(stage) for stage in ("preprocess", "manifest", "train", "evaluate", "bench", "report")}
SRC["generate"] = stage_src("generate", exclude=[CLUSTERING])


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


# Downloaded datasets: resources/raw/{dataset}/archives/<archive> (the verified download),
# resources/raw/{dataset}/extracted/<member> (one raw file, or one folder read as a unit), and
# for archives whose members are only known after extraction, the checkpoint's listing
# resources/raw/{dataset}/listings/<archive>.json. Every raw file (or folder) is one shard name
# and one preprocessing job.

RAW_SUFFIX = {"jetclass": ".root", "hls4ml": ".h5"}  # raw files in listed (checkpoint) archives


def downloaded_datasets():
    return [d for d, c in config["dataset"].items() if c["source"] != "pythia"]


def archive_path(dataset, archive):
    return f"resources/raw/{dataset}/archives/{archive}"


def listing_path(dataset, archive):
    return f"resources/raw/{dataset}/listings/{archive}.json"


def extracted_dir(dataset):
    return f"resources/raw/{dataset}/extracted"


def file_spec(dataset, archive):
    return downloads.DATASETS[dataset_cfg(dataset)["source"]].files[archive]


def selected(dataset, member):
    return glob_selects(dataset_cfg(dataset)["download"].get("members"), member)


def known_members(dataset, archive):
    """The members of an archive known in advance that this run uses (None: discovered on
    extraction): those download.members selects, and for ModelNet10 the configured classes'."""
    members = file_spec(dataset, archive).members
    if members is None:
        return None
    cfg = dataset_cfg(dataset)
    if cfg["source"] == "modelnet10":  # ModelNet10/<class>/<split>/
        members = [m for m in members if m.split("/")[1] in cfg["classes"]]
    return [m for m in members if selected(dataset, m)]


def known_archives(folders):
    """(dataset, archive, member) of every member known in advance; folders or plain files."""
    rows = []
    for d in downloaded_datasets():
        for a in dataset_cfg(d)["download"]["files"]:
            for m in known_members(d, a) or ():
                if m.endswith("/") == folders:
                    rows.append((d, a, m.rstrip("/")))
    return rows


def listed(dataset, archive):
    """Whether an archive's members are discovered by extracting it (a plain raw file has none)."""
    spec = file_spec(dataset, archive)
    return spec.members is None and not spec.plain


def listed_archives():
    """Archives whose members are discovered by extracting them (checkpoint extract_archive)."""
    return sorted({a for d in downloaded_datasets() for a in dataset_cfg(d)["download"]["files"]
                   if listed(d, a)})


def alternation(names):
    """A wildcard regex matching exactly these names (and nothing, if there are none)."""
    return "|".join(re.escape(n) for n in sorted(set(names))) or "(?!)"


def archive_of_member(dataset, member):
    for a in dataset_cfg(dataset)["download"]["files"]:
        if member in (m.rstrip("/") for m in known_members(dataset, a) or ()):
            return a
    raise ValueError(f"{dataset}: no configured archive is known to hold {member!r}")


def read_listing(path):
    """The files a finished extraction wrote (archive.extract's done-marker)."""
    return json.loads(Path(path).read_text())["files"]


def shard_name(member):
    """One shard name per raw member: its path without the suffix, '/' -> '-'."""
    stem = member[: -len(Path(member).suffix)] if Path(member).suffix else member
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem.replace("/", "-"))


_raw_inputs = {}
_finished = {}


def finished_listing(dataset, archive):
    """The listing of a finished extract_archive checkpoint (raises IncompleteCheckpointException
    until then). A finished checkpoint stays finished, so only the first success is asked for."""
    if (dataset, archive) not in _finished:
        job = checkpoints.extract_archive.get(dataset=dataset, archive=archive)
        _finished[dataset, archive] = job.output[0]
    return _finished[dataset, archive]


def raw_inputs(dataset):
    """{shard: (archive, member, path, listing or None)} of a downloaded dataset.

    A plain download (an h5 or npz, no archive) is its own raw file, with member None. Known
    members come from the file table; the others from the extraction listing, which
    exists only once checkpoint extract_archive has run (until then this raises Snakemake's
    IncompleteCheckpointException and the jobs that need it wait). Input functions call this
    for every job, so the result is kept until a listing changes."""
    cfg = dataset_cfg(dataset)
    listings = {}
    for archive in cfg["download"]["files"]:
        if listed(dataset, archive):
            listings[archive] = finished_listing(dataset, archive)
    key = tuple((path, os.stat(path).st_mtime_ns) for path in listings.values())
    if _raw_inputs.get(dataset, (None,))[0] == key:
        return _raw_inputs[dataset][1]
    out = {}
    for archive in cfg["download"]["files"]:
        listing = listings.get(archive)
        if file_spec(dataset, archive).plain:
            out[shard_name(archive)] = (archive, None, archive_path(dataset, archive), None)
            continue
        if listing is not None:
            suffix = RAW_SUFFIX[cfg["source"]]
            members = [m for m in read_listing(listing) if m.endswith(suffix) and selected(dataset, m)]
        else:
            members = [m.rstrip("/") for m in known_members(dataset, archive)]
        for m in members:
            shard = shard_name(m)
            if shard in out:
                raise ValueError(f"{dataset}: {archive}/{m} and {out[shard][0]}/{out[shard][1]} "
                                 f"would both be shard {shard!r}")
            out[shard] = (archive, m, f"{extracted_dir(dataset)}/{m}", listing)
    _raw_inputs[dataset] = (key, out)
    return out


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
    return {shard: row[2] for shard, row in raw_inputs(dataset).items()}


def fixed_split(dataset, shard):
    """The split every object of a raw file goes to (split.fixed: the first glob matching
    '<archive>/<member>', or the file name of a plain download), or None when its objects are
    split at random."""
    cfg = dataset_cfg(dataset)
    rules = cfg.get("split", {}).get("fixed", {})
    if cfg["source"] == "pythia" or not rules:
        return None
    archive, member = raw_inputs(dataset)[shard][:2]
    name = archive if member is None else f"{archive}/{member}"
    for pattern, split in rules.items():
        if fnmatch.fnmatchcase(name, pattern):
            return split
    return None


def dataset_listings(dataset):
    """The checkpoint listings of every archive of a dataset whose members are discovered."""
    if dataset_cfg(dataset)["source"] == "pythia":
        return []
    return [listing_path(dataset, a) for a in dataset_cfg(dataset)["download"]["files"]
            if listed(dataset, a)]


def raw_listing(dataset, shard):
    """The extraction listing a raw file came from (an input: re-extraction re-runs preprocessing)."""
    if dataset_cfg(dataset)["source"] == "pythia":
        return []
    listing = raw_inputs(dataset)[shard][3]
    return [listing] if listing else []


def preprocess_src(dataset, sort):
    """The preprocessing sources plus the reader of the dataset's source, which preprocess.py
    imports by name (salt.data.sources.SOURCES), so that no import statement shows it; the
    clustering code only for the clustering-history sorts (editing it re-runs only those shards)."""
    reader = SOURCES[dataset_cfg(dataset)["source"]]
    return stage_src("preprocess", reader, exclude=[] if sort in CLUSTERING_SORTS else [CLUSTERING])


def reader_options(dataset):
    """The reader options of a dataset: config options plus the class names the config fixes
    (JetClass: names of the ten label branches; ModelNet10: the class folders and their order,
    which must not depend on which folders happen to be extracted yet)."""
    cfg = dataset_cfg(dataset)
    options = dict(cfg.get("options", {}))
    if cfg["source"] == "jetclass":
        options.setdefault("class_names", list(cfg["classes"]))
    elif cfg["source"] == "modelnet10":
        options.setdefault("classes", list(cfg["classes"]))
    return options


def download_source_args(dataset):
    """Where the download comes from, as salt download arguments. Deliberately not a rule param:
    switching mirror or staging area must not re-download (and re-process) verified files."""
    dl = dataset_cfg(dataset)["download"]
    args = ["--retries", str(dl.get("retries", downloads.RETRIES))]
    if dl.get("base_url"):
        args += ["--base-url", dl["base_url"]]
    elif dl.get("local_dir"):
        args += ["--local-dir", os.path.abspath(dl["local_dir"])]
    return " ".join(shlex.quote(a) for a in args)


def md5_override_args(dataset, archive):
    """--md5 for an explicit override (a param: other expected bytes are another file)."""
    md5 = dataset_cfg(dataset)["download"].get("md5", {}).get(archive)
    return f"--md5 {md5}" if md5 else ""


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
    spec["classes"] = 1 if cfg.get("sigmoid") else len(cfg["classes"])  # one sigmoid output: C = 1, BCE
    return spec


check_variants({(d, v): variant_spec(d, v) for d, v, _, _ in run_matrix()})


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
