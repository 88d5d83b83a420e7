"""What a run does, decided from config.yaml: the run matrix, model specs, reader options, shard
names and the per-job settings. Plain functions of the config, so that they are unit-tested
without Snakemake; `workflow/rules/*.smk` only wires their answers to paths and commands.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from salt.data import sources
from salt.data.sources import FileSpec
from salt.training.settings import TrainSettings

Config = dict[str, Any]
Run = tuple[str, str, str, int]  # (dataset, variant, sort, seed)


def as_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): a param's text changes only when its value does."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def source_of(config: Config, dataset: str) -> sources.Source:
    return sources.get(config["dataset"][dataset]["source"])


# ---------------------------------------------------------------------------- the run matrix

def run_matrix(config: Config) -> list[Run]:
    """Every (dataset, variant, sort, seed) to train and evaluate, in config order, each once.
    A run's `datasets:` defaults to the top-level list; a dataset not in that list is not run."""
    rows: list[Run] = []
    for run in config["runs"]:
        for d in run.get("datasets", config["datasets"]):
            if d not in config["datasets"]:
                continue
            for v in run["variants"]:
                for s in run["sorts"]:
                    for seed in config["seeds"]:
                        if (d, v, s, seed) not in rows:
                            rows.append((d, v, s, seed))
    return rows


def variants_of(config: Config, dataset: str) -> list[str]:
    return sorted({v for d, v, _, _ in run_matrix(config) if d == dataset})


def variant_spec(config: Config, dataset: str, variant: str) -> dict[str, Any]:
    """The model spec of a named variant on a dataset: its knobs plus the dataset's shape
    (one sigmoid output, C = 1, when the dataset asks for binary cross entropy)."""
    cfg = config["dataset"][dataset]
    spec = dict(config["variants"][variant])
    spec["particles"] = cfg["particles"]
    spec["features"] = len(cfg["features"])
    spec["classes"] = 1 if cfg.get("sigmoid") else len(cfg["classes"])
    return spec


# ---------------------------------------------------------------------------- raw files

def generated_datasets(config: Config) -> list[str]:
    return [d for d in config["dataset"] if source_of(config, d).generated]


def downloaded_datasets(config: Config) -> list[str]:
    return [d for d in config["dataset"] if not source_of(config, d).generated]


def glob_selects(globs: Sequence[str] | None, member: str) -> bool:
    """Whether download.members (fnmatch globs, '*' crosses '/') selects a member; no globs: all."""
    return not globs or any(fnmatch.fnmatchcase(member.rstrip("/"), g) for g in globs)


def file_spec(config: Config, dataset: str, archive: str) -> FileSpec:
    return source_of(config, dataset).catalogue.files[archive]


def known_members(config: Config, dataset: str, archive: str) -> list[str] | None:
    """The members of an archive known in advance that this run uses (None: discovered on
    extraction): those download.members selects, of the configured classes where members are per class."""
    members = file_spec(config, dataset, archive).members
    if members is None:
        return None
    cfg, source = config["dataset"][dataset], source_of(config, dataset)
    if source.member_class is not None:
        members = tuple(m for m in members if source.member_class(m) in cfg["classes"])
    globs = cfg["download"].get("members")
    return [m for m in members if glob_selects(globs, m)]


def listed(config: Config, dataset: str, archive: str) -> bool:
    """Whether an archive's members are discovered by extracting it (a plain raw file has none)."""
    spec = file_spec(config, dataset, archive)
    return spec.members is None and not spec.plain


def listed_members(config: Config, dataset: str, listing: Iterable[str]) -> list[str]:
    """The raw files of an extraction listing that this run reads: the source's raw files that
    download.members selects."""
    suffix = source_of(config, dataset).raw_suffix
    globs = config["dataset"][dataset]["download"].get("members")
    return [m for m in listing if suffix is not None and m.endswith(suffix) and glob_selects(globs, m)]


def shard_name(member: str) -> str:
    """One shard name per raw member: its path without the suffix, '/' -> '-'."""
    stem = member[: -len(Path(member).suffix)] if Path(member).suffix else member
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem.replace("/", "-"))


def generated_shards(config: Config, dataset: str) -> list[str]:
    """The raw files (= shard names) of a generated dataset: <class>_<chunk>."""
    cfg = config["dataset"][dataset]
    return [f"{cls}_{chunk:03d}" for cls in cfg["classes"] for chunk in range(cfg["generate"]["chunks"])]


def generate_seed(config: Config, dataset: str, cls: str, chunk: int) -> int:
    """A distinct Pythia seed per (class, chunk), below Pythia's limit of 900,000,000."""
    cfg = config["dataset"][dataset]
    return cfg["generate"]["seed"] * 100_000 + cfg["classes"].index(cls) * 1_000 + int(chunk)


def fixed_split(config: Config, dataset: str, archive: str, member: str | None) -> str | None:
    """The split every object of a raw file goes to (split.fixed: the first glob matching
    '<archive>/<member>', or the file name of a plain download), or None when its objects are
    split at random."""
    rules = config["dataset"][dataset].get("split", {}).get("fixed", {})
    name = archive if member is None else f"{archive}/{member}"
    return next((split for pattern, split in rules.items() if fnmatch.fnmatchcase(name, pattern)), None)


# ---------------------------------------------------------------------------- per-job settings

def reader_options(config: Config, dataset: str) -> dict[str, Any]:
    """The reader options of a dataset: the source's defaults, the configured classes where the
    reader takes them, then the config's options."""
    cfg = config["dataset"][dataset]
    return source_of(config, dataset).reader_options(cfg["classes"], cfg.get("options", {}))


def train_settings(config: Config, variant: str) -> dict[str, Any]:
    """A training job's `train:` block: the variant's own schedule chosen (`schedules` keyed by
    variant name, then by model family, else `schedule`), minus the keys that only size the job
    or cannot change its result, so that editing another variant's schedule or the thread count
    retrains nothing."""
    settings = dict(config["train"])
    schedules = settings.pop("schedules", None) or {}
    for key in ("threads", "gpus", *TrainSettings.NOT_IN_RESULT):
        settings.pop(key, None)
    family = config["variants"][variant]["model"]
    settings["schedule"] = schedules.get(variant, schedules.get(family, settings["schedule"]))
    return settings


def run_settings(config: Config) -> dict[str, Any]:
    """Training settings that cannot change the weights (e.g. checkpoint_minutes)."""
    return {k: config["train"][k] for k in TrainSettings.NOT_IN_RESULT if k in config["train"]}


def train_processes(config: Config) -> int:
    """DDP processes per training job: one per GPU (torchrun inside `salt train --nproc`)."""
    return config["train"]["gpus"] if config["use_gpu"] else 1


def train_device(config: Config) -> str:
    return "cuda" if config["use_gpu"] else "cpu"
