"""Checks of config.yaml that its JSON schema cannot express, run before any job starts.

The schema checks each value alone; these catch the combinations that would otherwise pass
validation and fail hours later (split fractions that leave no training jets, a feature the
source cannot deliver, a variant whose heads do not divide d_model), and turn a misspelled
key into one line with a suggestion instead of the schema printed in full.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from salt.data.kinematics import DERIVED_FEATURES
from salt.data.sources import SOURCES
from salt.data.sources.jetclass import PID_BRANCHES, TRACK_BRANCHES
from salt.models.spec import ModelSpec


class ConfigError(ValueError):
    """A config mistake; the message starts with `config:` and names the key."""


# per-particle features a jet source stores beyond the kinematics every jet record derives
# (JetClass: ParT's particle-ID and track inputs; generated files: particle ID only; quark-gluon:
# EnergyFlow's rapidity and PDG id); a source not listed has none
EXTRA_FEATURES: dict[str, tuple[str, ...]] = {
    "jetclass": tuple(b.removeprefix("part_") for b in PID_BRANCHES + TRACK_BRANCHES),
    "pythia": tuple(b.removeprefix("part_") for b in PID_BRANCHES),
    "quarkgluon": ("rapidity", "pid"),
}
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
        kind = importlib.import_module(SOURCES[ds["source"]]).KIND
        known = POINT_FEATURES if kind == "points" else DERIVED_FEATURES + EXTRA_FEATURES.get(ds["source"], ())
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
