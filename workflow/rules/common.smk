# Paths and input functions: where each stage's files are, and which files a job needs. What a
# run does (the run matrix, model specs, reader options, shard names, per-job settings) is decided
# in salt/plan.py and checked in salt/configcheck.py, both plain tested Python; this file binds
# them to this run's `config` and to the checkpoint that lists extracted archives.
import json
import os
import re
import shlex
from pathlib import Path

from salt import plan
from salt.cli import SUBCOMMANDS
from salt.configcheck import check_config
from salt.data import download as downloads
from salt.data.archive import glob_escape
from salt.data.clustering import SORTS as CLUSTERING_SORTS
from salt.data.kinematics import JET_SORTS, POINT_SORTS
from salt.data.sources import MODULES
from salt.dependencies import NOT_IN_RESULT, source_files
from salt.plan import as_json, shard_name


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    variant=r"[A-Za-z0-9_]+",
    sort="|".join(sorted(set(JET_SORTS) | set(POINT_SORTS))),
    seed=r"\d+",
    split=r"train|val|test",
    shard=r"[A-Za-z0-9_.-]+",
    device=r"cpu|cuda",


SPLITS = ("train", "val", "test")

check_config(config)

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
# The run matrix (salt/plan.py, bound to this run's config)


def run_matrix():
    return plan.run_matrix(config)


def variants_of(dataset):
    return plan.variants_of(config, dataset)


def variant_spec(dataset, variant):
    return plan.variant_spec(config, dataset, variant)


def dataset_cfg(dataset):
    return config["dataset"][dataset]


def train_device():
    return plan.train_device(config)


# ---------------------------------------------------------------------------
# Raw files and shards
#
# Downloaded datasets: resources/raw/{dataset}/archives/<archive> (the verified download),
# resources/raw/{dataset}/extracted/<member> (one raw file, or one folder read as a unit), and
# for archives whose members are only known after extraction, the checkpoint's listing
# resources/raw/{dataset}/listings/<archive>.json. Every raw file (or folder) is one shard name
# and one preprocessing job.


def archive_path(dataset, archive):
    return f"resources/raw/{dataset}/archives/{archive}"


def listing_path(dataset, archive):
    return f"resources/raw/{dataset}/listings/{archive}.json"


def extracted_dir(dataset):
    return f"resources/raw/{dataset}/extracted"


def known_archives(folders):
    """(dataset, archive, member) of every member known in advance; folders or plain files."""
    rows = []
    for d in plan.downloaded_datasets(config):
        for a in dataset_cfg(d)["download"]["files"]:
            for m in plan.known_members(config, d, a) or ():
                if m.endswith("/") == folders:
                    rows.append((d, a, m.rstrip("/")))
    return rows


def listed_archives():
    """Archives whose members are discovered by extracting them (checkpoint extract_archive)."""
    return sorted({a for d in plan.downloaded_datasets(config) for a in dataset_cfg(d)["download"]["files"]
                   if plan.listed(config, d, a)})


def alternation(names):
    """A wildcard regex matching exactly these names (and nothing, if there are none)."""
    return "|".join(re.escape(n) for n in sorted(set(names))) or "(?!)"


def archive_of_member(dataset, member):
    for a in dataset_cfg(dataset)["download"]["files"]:
        if member in (m.rstrip("/") for m in plan.known_members(config, dataset, a) or ()):
            return a
    raise ValueError(f"{dataset}: no configured archive is known to hold {member!r}")


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
    members come from the source's catalogue; the others from the extraction listing, which
    exists only once checkpoint extract_archive has run (until then this raises Snakemake's
    IncompleteCheckpointException and the jobs that need it wait). Input functions call this
    for every job, so the result is kept until a listing changes."""
    files = dataset_cfg(dataset)["download"]["files"]
    listings = {a: finished_listing(dataset, a) for a in files if plan.listed(config, dataset, a)}
    key = tuple((path, os.stat(path).st_mtime_ns) for path in listings.values())
    if _raw_inputs.get(dataset, (None,))[0] == key:
        return _raw_inputs[dataset][1]
    out = {}
    for archive in files:
        listing = listings.get(archive)
        if plan.file_spec(config, dataset, archive).plain:
            out[shard_name(archive)] = (archive, None, archive_path(dataset, archive), None)
            continue
        if listing is not None:
            members = plan.listed_members(config, dataset, json.loads(Path(listing).read_text())["files"])
        else:
            members = [m.rstrip("/") for m in plan.known_members(config, dataset, archive)]
        for m in members:
            shard = shard_name(m)
            if shard in out:
                raise ValueError(f"{dataset}: {archive}/{m} and {out[shard][0]}/{out[shard][1]} "
                                 f"would both be shard {shard!r}")
            out[shard] = (archive, m, f"{extracted_dir(dataset)}/{m}", listing)
    _raw_inputs[dataset] = (key, out)
    return out


def generated(dataset):
    return plan.source_of(config, dataset).generated


def raw_files(dataset):
    """{shard name: raw file} of a dataset; one preprocessing job per entry."""
    if generated(dataset):
        return {s: f"resources/raw/{dataset}/{s}.root" for s in plan.generated_shards(config, dataset)}
    return {shard: row[2] for shard, row in raw_inputs(dataset).items()}


def fixed_split(dataset, shard):
    """The split every object of a raw file goes to (salt.plan.fixed_split), or None."""
    if generated(dataset) or not dataset_cfg(dataset).get("split", {}).get("fixed"):
        return None
    archive, member = raw_inputs(dataset)[shard][:2]
    return plan.fixed_split(config, dataset, archive, member)


def dataset_listings(dataset):
    """The checkpoint listings of every archive of a dataset whose members are discovered."""
    if generated(dataset):
        return []
    return [listing_path(dataset, a) for a in dataset_cfg(dataset)["download"]["files"]
            if plan.listed(config, dataset, a)]


def raw_listing(dataset, shard):
    """The extraction listing a raw file came from (an input: re-extraction re-runs preprocessing)."""
    if generated(dataset):
        return []
    listing = raw_inputs(dataset)[shard][3]
    return [listing] if listing else []


def preprocess_src(dataset, sort):
    """The preprocessing sources plus the dataset's source descriptor and reader, which preprocess.py
    imports by name (salt.data.sources.MODULES), so that no import statement shows them; the
    clustering code only for the clustering-history sorts (editing it re-runs only those shards)."""
    source = plan.source_of(config, dataset)
    return stage_src("preprocess", MODULES[source.name], source.reader,
                     exclude=[] if sort in CLUSTERING_SORTS else [CLUSTERING])


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
