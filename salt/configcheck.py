"""Checks of config.yaml that its JSON schema cannot express, run before any job starts.

The schema checks each value alone; these catch the combinations that would otherwise pass
validation and fail hours later (split fractions that leave no training jets, a feature the
source cannot deliver, a variant whose heads do not divide d_model), and turn a misspelled
key into one line with a suggestion instead of the schema printed in full.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from salt.data import sources
from salt.data.kinematics import DERIVED_FEATURES, JET_SORTS, POINT_SORTS
from salt.plan import glob_selects, run_matrix, variant_spec
from salt.models.spec import ModelSpec


class ConfigError(ValueError):
    """A config mistake; the message starts with `config:` and names the key."""


POINT_FEATURES = ("x", "y", "z")


def check_keys(config: dict[str, Any], schema_path: str | Path) -> None:
    """The first key the schema does not allow, as one line naming where it is and what was meant."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    for where, key, known in _unknown_keys(config, schema, schema, "config"):
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{where}: unknown key {key!r}; {hint}expected one of {sorted(known)}")


def _unknown_keys(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str
                  ) -> Iterator[tuple[str, str, list[str]]]:
    while "$ref" in schema:   # only local references: #/$defs/<name>
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _unknown_keys(item, schema["items"], root, f"{where}[{i}]")
    if not isinstance(value, dict):
        return
    props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in props:
            yield from _unknown_keys(item, props[key], root, f"{where}.{key}")
        elif extra is False:
            yield where, str(key), list(props)
        elif isinstance(extra, dict):
            yield from _unknown_keys(item, extra, root, f"{where}.{key}")


def check_datasets(config: dict[str, Any]) -> None:
    """Split fractions that leave training jets, and features the dataset's source can deliver."""
    for name, ds in config["dataset"].items():
        where = f"config: dataset.{name}"
        split = ds.get("split", {})
        val, test = split.get("val", 0.0), split.get("test", 0.0)
        if val + test >= 1:
            raise ConfigError(f"{where}.split: val {val} + test {test} = {val + test:g} leaves no jets for training; "
                              f"expected val + test < 1")
        source = sources.get(ds["source"])
        known = POINT_FEATURES if source.kind == "points" else DERIVED_FEATURES + source.extra_features
        unknown = [f for f in ds.get("features", []) if f not in known]
        if unknown:
            raise ConfigError(f"{where}.features: {unknown} are not features of source {ds['source']}; "
                              f"expected some of {list(known)}")


def check_variants(specs: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Every {(dataset, variant): model spec} the run trains makes a valid model (heads divide d_model, ...)."""
    for (dataset, variant), spec in specs.items():
        try:
            ModelSpec.from_dict(spec)
        except ValueError as err:
            raise ConfigError(f"config: variants.{variant} on dataset {dataset}: {err}") from None


def check_config(config: dict[str, Any]) -> None:
    """Every check a run needs before its first job: datasets, their sources' shape and files,
    the runs' references and sorts, and the model specs the run matrix builds."""
    check_datasets(config)
    for name in config["datasets"]:
        if name not in config["dataset"]:
            raise ConfigError(f"config: datasets lists {name!r}, but dataset.{name} is not defined")
    for i, run in enumerate(config["runs"]):
        for v in run["variants"]:
            if v not in config["variants"]:
                raise ConfigError(f"config: runs[{i}] names variant {v!r}, not defined under variants")
        for d in run.get("datasets", []):
            if d not in config["dataset"]:
                raise ConfigError(f"config: runs[{i}] names dataset {d!r}, not defined under dataset")
    for name, ds in config["dataset"].items():
        source = sources.get(ds["source"])
        if source.generated and "generate" not in ds:
            raise ConfigError(f"config: dataset.{name} has source {ds['source']} but no generate: block")
        if not source.generated:
            check_download(name, ds)
        check_dataset_shape(name, ds)
    for i, run in enumerate(config["runs"]):
        for d in run.get("datasets", config["datasets"]):
            if d not in config["dataset"]:
                continue
            points = sources.get(config["dataset"][d]["source"]).kind == "points"
            allowed = POINT_SORTS if points else JET_SORTS
            bad = [s for s in run["sorts"] if s not in allowed]
            if bad:
                what = "point clouds" if points else "jets"
                raise ConfigError(
                    f"config: runs[{i}] sorts dataset {d!r} ({what}) by {bad}; {what} can be sorted by "
                    f"{sorted(allowed)} (give the run a datasets: list to keep jet sorts off point clouds)"
                )
    check_variants({(d, v): variant_spec(config, d, v) for d, v, _, _ in run_matrix(config)})


def check_download(name: str, ds: dict[str, Any]) -> None:
    """A downloaded dataset names known files of its source, and its globs select something."""
    where = f"config: dataset.{name}"
    if "download" not in ds:
        raise ConfigError(f"{where} (source {ds['source']}) needs a download: block with files: [...]")
    dl = ds["download"]
    source = sources.get(ds["source"])
    table = source.catalogue.files
    unknown = [f for f in dl["files"] if f not in table]
    if unknown:
        raise ConfigError(f"{where}.download.files: {unknown} are not files of {ds['source']}; "
                          f"expected some of {sorted(table)}")
    if dl.get("base_url") and dl.get("local_dir"):
        raise ConfigError(f"{where}.download: give base_url or local_dir, not both")
    extra = sorted(set(dl.get("md5", {})) - set(dl["files"]))
    if extra:
        raise ConfigError(f"{where}.download.md5 overrides files not in download.files: {extra}")
    for archive in dl["files"]:
        known = table[archive].members
        if known is not None and not any(glob_selects(dl.get("members"), m) for m in known):
            raise ConfigError(f"{where}.download.members {dl.get('members')} select none of the members of "
                              f"{archive} (e.g. {known[0]!r})")
    if source.member_class is not None:
        classes = {source.member_class(m) for a in dl["files"] for m in table[a].members or ()}
        unknown = [c for c in ds["classes"] if c not in classes]
        if unknown:
            raise ConfigError(f"{where}.classes {unknown} are not {ds['source']} classes {sorted(classes)}")


def check_dataset_shape(name: str, ds: dict[str, Any]) -> None:
    """Features and classes that the source can actually deliver."""
    where = f"config: dataset.{name}"
    source = sources.get(ds["source"])
    if source.kind == "points":
        bad = [f for f in ds.get("features", []) if f not in POINT_FEATURES]
        if bad:
            raise ConfigError(f"{where}.features {bad}: point clouds have the features {', '.join(POINT_FEATURES)}")
    if source.label_branches is not None:
        labels = ds.get("options", {}).get("label_branches") or source.label_branches
        if len(ds["classes"]) != len(labels):
            raise ConfigError(f"{where}.classes names {len(ds['classes'])} classes; the files have "
                              f"{len(labels)} label branches ({', '.join(labels)})")
    if source.class_names is not None and list(ds["classes"]) != list(source.class_names):
        raise ConfigError(f"{where}.classes must be {list(source.class_names)} (the files' label order)")
    if ds.get("sigmoid") and len(ds["classes"]) != 2:
        raise ConfigError(f"{where}.sigmoid needs exactly 2 classes, got {ds['classes']}")
