"""The report's inputs: evaluation, benchmark and attention files, read, checked and labelled.

Every file says what it is in its own content (a metrics.json its run's dataset, variant, sort
and seed, a benchmark file its dataset, variant and device), never through its path, so files
can be copied or renamed and a table never mixes a number with the wrong model. A model's
size (parameters, FLOPs) is stated by both its metrics and its benchmark files; the report
takes one value per (dataset, variant) from `model_costs`, which refuses files that disagree.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from salt.attention import AttentionMaps, read_attention
from salt.identity import RunIdentity
from salt.metrics import canonical_name, from_json_safe

log = logging.getLogger(__name__)

# Display order and names. Paper order: Transformer, Linformer, SAL-T (ablations before SAL-T).
FAMILY_ORDER = ("transformer", "part", "linformer", "salt_nopartition", "salt_noconv", "salt", "salt_pair")
FAMILY_LABELS = {
    "transformer": "Transformer",
    "part": "Transformer + pair bias (ParT)",
    "linformer": "Linformer",
    "salt": "SAL-T",
    "salt_noconv": "SAL-T (no conv)",
    "salt_nopartition": "SAL-T (no partition)",
    "salt_pair": "SAL-T + pair bias",
}
SORT_ORDER = ("kt", "pt", "deltaR", "ca_depth", "lund_kt", "radius", "none")
SORT_LABELS = {"kt": "kT", "pt": "pT", "deltaR": "ΔR", "ca_depth": "C/A depth-first", "lund_kt": "Lund kT",
               "radius": "radius", "none": "none"}
SORT_LATEX = {"kt": r"$k_\mathrm{T}$", "pt": r"$p_\mathrm{T}$", "deltaR": r"$\Delta R$",
              "ca_depth": "C/A depth-first", "lund_kt": r"Lund $k_\mathrm{T}$"}
# The sort the paper's single-sort figures use (kT), then the others in SORT_ORDER.
PREFERRED_SORT = "kt"
DATASET_LABELS = {
    "pythia": "Pythia 8 + FastJet jets",
    "hls4ml": "hls4ml LHC jet dataset",
    "jetclass": "JetClass",
    "top": "Top tagging",
    "qg": "Quark-gluon",
    "modelnet10": "ModelNet10",
}


# What a figure says its data are: simulated jets everywhere except the CAD point clouds.
SAMPLE_KIND = {"modelnet10": "CAD point clouds"}


def sample_kind(dataset: str) -> str:
    return SAMPLE_KIND.get(dataset, "Simulation")


class ReportInputError(ValueError):
    """An input file that is not what the report expects; the message names the file and the key."""


@dataclass
class Evaluation:
    """One metrics.json: a (dataset, variant, sort, seed) run."""

    path: Path
    dataset: str
    variant: str
    sort: str
    seed: int
    metrics: dict[str, Any]
    spec: dict[str, Any]
    cost: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # the file's "dataset" block

    @property
    def predictions(self) -> Path:
        return self.path.with_name("predictions.npz")

    @property
    def scheme(self) -> str:
        return str(self.metrics.get("scheme", "generic"))

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.metrics.get("class_names", self.info.get("classes", []))]


@dataclass
class Bench:
    """One benchmark file: a variant on a dataset's shape, on one device."""

    path: Path
    dataset: str
    variant: str
    device: str
    spec: dict[str, Any]
    cost: dict[str, Any]
    device_info: dict[str, Any]
    results: list[dict[str, Any]]
    skipped: list[dict[str, Any]] = field(default_factory=list)  # configurations not measured, with "reason"
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise ReportInputError(f"{path}: cannot read ({err})") from err
    except json.JSONDecodeError as err:
        raise ReportInputError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return from_json_safe(data)


def _require(data: dict[str, Any], path: Path, keys: Iterable[str], kind: str) -> None:
    for key in keys:
        if key not in data:
            raise ReportInputError(f"{path}: {kind} has no {key!r} entry")


def load_evaluation(path: str | Path) -> Evaluation:
    """Read one metrics.json; its dataset, variant, sort and seed come from its 'identity' entry."""
    p = Path(path)
    data = _read_json(p)
    try:
        identity = RunIdentity.from_file(data, p)
    except ValueError as err:
        raise ReportInputError(str(err)) from None
    _require(data, p, ("metrics", "spec", "cost"), "metrics file")
    metrics = data["metrics"]
    if not isinstance(metrics, dict) or "accuracy" not in metrics:
        raise ReportInputError(f"{p}: 'metrics' must be the output of salt.metrics.compute_metrics "
                               f"(a mapping with 'accuracy')")
    info = data.get("dataset") or {}
    if info.get("sort") not in (None, identity.sort):
        raise ReportInputError(f"{p}: the shards it was evaluated on are sorted by {info['sort']!r}, "
                               f"but its identity says sort {identity.sort!r}")
    return Evaluation(path=p, dataset=identity.dataset, variant=identity.variant, sort=identity.sort,
                      seed=identity.seed, metrics=metrics, spec=dict(data["spec"]), cost=dict(data["cost"]), info=info)


RESULT_KEYS = ("particles", "batch")


def load_bench(path: str | Path) -> Bench:
    """Read one benchmark file (the contract of salt.bench), checking each result row names its point."""
    p = Path(path)
    data = _read_json(p)
    _require(data, p, ("variant", "dataset", "spec", "cost", "results"), "benchmark file")
    device = data.get("device") or (data.get("device_info") or {}).get("device")
    if device is None:
        raise ReportInputError(f"{p}: benchmark file has no 'device' entry")
    if not isinstance(data["results"], list):
        raise ReportInputError(f"{p}: 'results' must be a list of measurements")
    for i, row in enumerate(data["results"]):
        if not isinstance(row, dict):
            raise ReportInputError(f"{p}: results[{i}] must be an object")
        for key in RESULT_KEYS:
            if key not in row:
                raise ReportInputError(f"{p}: results[{i}] has no {key!r} entry")
    return Bench(path=p, dataset=str(data["dataset"]), variant=str(data["variant"]), device=str(device),
                 spec=dict(data["spec"]), cost=dict(data["cost"]), device_info=dict(data.get("device_info") or {}),
                 results=list(data["results"]),
                 skipped=[r for r in data.get("skipped") or [] if isinstance(r, dict)],
                 notes=[str(n) for n in data.get("notes") or []])


def load_evaluations(paths: Sequence[str | Path]) -> list[Evaluation]:
    evals = [load_evaluation(p) for p in paths]
    seen: dict[tuple, Path] = {}
    for e in evals:
        key = (e.dataset, e.variant, e.sort, e.seed)
        if key in seen:
            raise ReportInputError(f"{e.path}: the same run as {seen[key]} (dataset, variant, sort, seed = {key})")
        seen[key] = e.path
    check_specs_agree(evals)
    return evals


def load_benches(paths: Sequence[str | Path]) -> list[Bench]:
    return [load_bench(p) for p in paths]


def load_attention(path: str | Path) -> AttentionMaps:
    """Read the attention maps `salt evaluate` wrote beside a run's metrics."""
    try:
        return read_attention(path)
    except OSError as err:
        raise ReportInputError(f"{path}: cannot read ({err.strerror or err})") from err
    except ValueError as err:
        raise ReportInputError(str(err)) from None


COST_KEYS = ("params", "flops_paper", "flops")
Costs = dict[tuple[str, str], dict[str, Any]]  # (dataset, variant) -> {key in COST_KEYS: value}


def model_costs(evals: Sequence[Evaluation], benches: Sequence[Bench]) -> Costs:
    """One size per (dataset, variant): {"params", "flops_paper", "flops"}, the same in every table and
    figure. Metrics and benchmark files both state it (each stage computes it with salt.models.cost
    from the spec it ran); a value two files give differently is an error naming both, since
    one of them describes another model. A key a file lacks is taken from the others."""
    costs: Costs = {}
    source: dict[tuple[str, str, str], Path] = {}
    for item in [*evals, *benches]:
        key = (item.dataset, item.variant)
        cost = costs.setdefault(key, dict.fromkeys(COST_KEYS))
        for k in COST_KEYS:
            value = item.cost.get(k)
            if value is None:
                continue
            if cost[k] is None:
                cost[k], source[(*key, k)] = value, item.path
            elif value != cost[k]:
                raise ReportInputError(f"{item.path}: {k} = {value} for variant {item.variant!r} on {item.dataset!r}, "
                                       f"but {source[(*key, k)]} says {cost[k]} (one describes another model; "
                                       "evaluate or benchmark it again)")
    return costs


def check_specs_agree(evals: Sequence[Evaluation]) -> None:
    """A variant must be one architecture on a dataset, whatever the sort or seed."""
    first: dict[tuple[str, str], Evaluation] = {}
    for e in evals:
        ref = first.setdefault((e.dataset, e.variant), e)
        if e.spec != ref.spec:
            diff = sorted(k for k in set(e.spec) | set(ref.spec) if e.spec.get(k) != ref.spec.get(k))
            raise ReportInputError(f"{e.path}: variant {e.variant!r} on {e.dataset!r} has a different spec from "
                                   f"{ref.path} (keys {diff})")


# ----------------------------------------------------------------------------- labels and order

def family(spec: dict[str, Any]) -> str:
    return str(spec.get("model", "?"))


def variant_label(variant: str, spec: dict[str, Any]) -> str:
    """'SAL-T' for the variant named after its family, 'SAL-T (salt_p8)' for any other."""
    fam = family(spec)
    base = FAMILY_LABELS.get(fam, fam)
    return base if variant == fam else f"{base} ({variant})"


def variant_sort_key(variant: str, spec: dict[str, Any]) -> tuple:
    fam = family(spec)
    rank = FAMILY_ORDER.index(fam) if fam in FAMILY_ORDER else len(FAMILY_ORDER)
    return (rank, variant != fam, int(spec.get("partitions", 0) or 0), variant)


def ordered_variants(items: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """Variant names in display order (family, then the family's own variant first, then p, then name)."""
    specs: dict[str, dict[str, Any]] = {}
    for name, spec in items:
        specs.setdefault(name, spec)
    return sorted(specs, key=lambda v: variant_sort_key(v, specs[v]))


def sort_rank(sort: str) -> tuple[int, str]:
    return (SORT_ORDER.index(sort) if sort in SORT_ORDER else len(SORT_ORDER), sort)


def ordered_sorts(sorts: Iterable[str]) -> list[str]:
    return sorted(set(sorts), key=sort_rank)


def sort_label(sort: str) -> str:
    return SORT_LABELS.get(sort, sort)


def preferred_sort(sorts: Iterable[str]) -> str | None:
    """kT if present (the paper's choice), else the first in SORT_ORDER."""
    ordered = ordered_sorts(sorts)
    if not ordered:
        return None
    return PREFERRED_SORT if PREFERRED_SORT in ordered else ordered[0]


def dataset_label(dataset: str) -> str:
    return DATASET_LABELS.get(dataset, dataset)


def group(evals: Iterable[Evaluation], *keys: str) -> dict[tuple, list[Evaluation]]:
    """Evaluations grouped by the named attributes, seeds ordered within each group."""
    out: dict[tuple, list[Evaluation]] = {}
    for e in evals:
        out.setdefault(tuple(getattr(e, k) for k in keys), []).append(e)
    for runs in out.values():
        runs.sort(key=lambda e: e.seed)
    return out


def ordered_datasets(names: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return seen


# ----------------------------------------------------------------------------- partition sweeps

SWEEP_EXCLUDED_FAMILIES = ("transformer",)  # full attention has no partitions: a p "sweep" is one model


def partition_sweeps(specs: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Groups of variants (of one dataset) that differ only in `partitions`, each ordered by p.

    `specs` maps variant -> spec. A group needs at least two distinct p values; the transformer
    is left out because its spec's `partitions` does nothing."""
    groups: dict[str, list[str]] = {}
    for name, spec in specs.items():
        if family(spec) in SWEEP_EXCLUDED_FAMILIES or "partitions" not in spec:
            continue
        key = json.dumps({k: v for k, v in spec.items() if k != "partitions"}, sort_keys=True)
        groups.setdefault(key, []).append(name)
    sweeps = []
    for names in groups.values():
        if len({specs[n]["partitions"] for n in names}) >= 2:
            sweeps.append(sorted(names, key=lambda n: (specs[n]["partitions"], n)))
    sweeps.sort(key=lambda names: variant_sort_key(names[0], specs[names[0]]))
    return sweeps


def class_index(names: Sequence[str]) -> dict[str, str]:
    """canonical class name -> the name as the metrics use it."""
    return {canonical_name(n): n for n in names}
