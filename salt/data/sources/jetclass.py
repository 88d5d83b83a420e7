"""JetClass ROOT files (Zenodo 6619768) and files written in the same schema (our Pythia jets).

Every JetClass file is a TTree ``tree`` of 100k jets with jagged ``part_*`` branches,
scalar ``jet_*`` branches and one-hot ``label_*`` branches of mixed dtypes (float32,
bool, int32). The reader reads only the branches it needs, one entry range at a time,
so a 150 MB file never sits in memory with all of its ~40 branches, and it works on the
flat particle arrays (numpy) rather than per jet, which is what makes it fast.

Two quirks of the files are undone here so that every later stage sees physical values:
- ``part_deta`` is stored as ``(eta_part - eta_jet) * sign(eta_jet)`` with sign(0) = +1
  (ParT's conversion scripts; the real files document the same flip), so Record.deta is
  multiplied by the same sign again to get the true difference back.
- there are no ``part_pt/eta/phi`` branches; they are derived from px, py, pz.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Iterator, Sequence

import awkward as ak
import numpy as np
import uproot

from salt.data.record import Record, RecordError
from salt.data.kinematics import wrap_phi
from salt.data.sources import Catalogue, FileSpec, Source, entry_range, jagged_record

TREE = "tree"
KIND = "jet"

# Label branches in the order used by ParT, weaver and SAL-T (class index = position).
JETCLASS_LABELS = (
    "label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q",
    "label_Hqql", "label_Zqq", "label_Wqq", "label_Tbqq", "label_Tbl",
)
JETCLASS_CLASS_NAMES = tuple(name.removeprefix("label_") for name in JETCLASS_LABELS)
CLASS_NAMES = JETCLASS_CLASS_NAMES


# File-name prefixes of the raw files, in label order (QCD, Hbb, Hcc, Hgg, H4q, Hqql, Zqq, Wqq, Tbqq, Tbl).
PROCESSES = ("ZJetsToNuNu", "HToBB", "HToCC", "HToGG", "HToWW4Q", "HToWW2Q1L", "ZToQQ", "WToQQ",
             "TTBar", "TTBarLep")


def _members(folder: str, indices: range) -> tuple[str, ...]:
    return tuple(f"{folder}/{p}_{i:03d}.root" for p in PROCESSES for i in indices)


def _files() -> dict[str, FileSpec]:
    """md5s from ParT's get_datasets.py."""
    md5s = ["de4fd2dca2e68ab3c85d5cfd3bcc65c3", "9722a359c5ef697bea0fbf79bf50f003",
            "1e9f66cd1f915f9d10e90ae1d7761720", "47348fc8985319fa4806da87500482fa",
            "6b0ce16bd93b442a8d51914466990279", "416e347512e716de51d392bee327b8e9",
            "e9b9c1557b1b39bf0a16e4ab631ae451", "5bfc6cb285ccb7680cefa9ac82ad1a2e",
            "540c1a0d66dfad78d2b363c5740ccf86", "668f40b3275167ff7104c48317c0ae2a"]
    # Which of the train files 000-099 each train part holds (and under which folder) is not
    # documented: those members are listed after extraction. Val and test are known.
    files = {f"JetClass_Pythia_train_100M_part{i}.tar": FileSpec(m) for i, m in enumerate(md5s)}
    files["JetClass_Pythia_val_5M.tar"] = FileSpec("7235ccb577ed85023ea3ab4d5e6160cf",
                                                   members=_members("val_5M", range(120, 125)))
    files["JetClass_Pythia_test_20M.tar"] = FileSpec("64e5156d26d101adeb43b8388207d767",
                                                     members=_members("test_20M", range(100, 120)))
    return files


MOMENTUM_BRANCHES = ("part_px", "part_py", "part_pz", "part_energy")
PARTICLE_BRANCHES = MOMENTUM_BRANCHES + ("part_deta", "part_dphi")
# The branches each Record field is computed from: a read asked for some fields reads only these.
FIELD_BRANCHES: dict[str, tuple[str, ...]] = {
    "px": ("part_px",), "py": ("part_py",), "pz": ("part_pz",), "energy": ("part_energy",),
    "pt": ("part_px", "part_py"), "phi": ("part_px", "part_py"), "eta": ("part_px", "part_py", "part_pz"),
    "deta": ("part_deta",), "dphi": ("part_dphi",),
}
JET_BRANCHES = ("jet_pt", "jet_eta", "jet_phi", "jet_energy")
# Optional per-particle branches (ParT's "kinpid" and "full" inputs); ask for them by name.
PID_BRANCHES = (
    "part_charge", "part_isChargedHadron", "part_isNeutralHadron",
    "part_isPhoton", "part_isElectron", "part_isMuon",
)
TRACK_BRANCHES = ("part_d0val", "part_d0err", "part_dzval", "part_dzerr")

SOURCE = Source(
    "jetclass", reader=__name__, kind=KIND, label_branches=JETCLASS_LABELS, classes_option="class_names",
    extra_features=tuple(b.removeprefix("part_") for b in PID_BRANCHES + TRACK_BRANCHES), raw_suffix=".root",
    catalogue=Catalogue("https://zenodo.org/records/6619768/files/{name}?download=1", _files()))
# The 100k-jet example file of the JetClass authors: no config uses it; users fetch it to look at the format.
EXAMPLE = Catalogue("https://hqu.web.cern.ch/datasets/JetClass/example/{name}",
                    {"JetClass_example_100k.root": FileSpec(None)})

DEFAULT_STEP = 50_000


def stored_deta(deta: np.ndarray, jet_eta: np.ndarray) -> np.ndarray:
    """The file's sign convention for part_deta, `np.where(jet_eta > 0, Δη, −Δη)` as JetClass's own
    writer states it: writers of JetClass-schema files must use this.

    A jet at η = 0 exactly is therefore stored flipped. `deta` is flat per particle or jagged;
    `jet_eta` is broadcast to it (pass it repeated per particle for flat input). Applying it
    twice gives the input back.
    """
    return np.where(jet_eta > 0, deta, -deta)


def num_entries(path: str | os.PathLike[str], tree: str = TREE) -> int:
    """Number of jets in `path` (reads only the tree header)."""
    with _open_tree(path, tree) as t:
        return int(t.num_entries)


def read(
    path: str | os.PathLike[str],
    entry_start: int | None = None,
    entry_stop: int | None = None,
    label_branches: Sequence[str] = JETCLASS_LABELS,
    class_names: Sequence[str] | None = None,
    extra_particle_branches: Sequence[str] = (),
    extra_jet_branches: Sequence[str] = (),
    tree: str = TREE,
    fields: Sequence[str] | None = None,
) -> Record:
    """Read jets [entry_start, entry_stop) of `path` into a validated Record.

    `class_names` defaults to the label branch names without ``label_``.
    Extra branches keep their name without the ``part_`` / ``jet_`` prefix, cast to float32.
    `fields`: the kinematic particle fields wanted (default all of JET_PARTICLE_FIELDS); only
    the branches they need are read, so (pt, deta, dphi) skips part_pz and part_energy.
    Raises RecordError naming the file (and entry) for missing branches, a damaged file,
    non-one-hot labels, non-finite values and jets without particles.
    """
    names = _class_names(label_branches, class_names)
    with _open_tree(path, tree) as t:
        return _read_range(t, os.fspath(path), entry_start, entry_stop, tuple(label_branches), names,
                           tuple(extra_particle_branches), tuple(extra_jet_branches), _kinematic(fields))


def iter_records(
    path: str | os.PathLike[str],
    step: int = DEFAULT_STEP,
    entry_start: int | None = None,
    entry_stop: int | None = None,
    label_branches: Sequence[str] = JETCLASS_LABELS,
    class_names: Sequence[str] | None = None,
    extra_particle_branches: Sequence[str] = (),
    extra_jet_branches: Sequence[str] = (),
    tree: str = TREE,
    fields: Sequence[str] | None = None,
) -> Iterator[Record]:
    """Records of at most `step` jets covering [entry_start, entry_stop), opening the file once."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    names = _class_names(label_branches, class_names)
    source = os.fspath(path)
    kinematic = _kinematic(fields)
    with _open_tree(path, tree) as t:
        start, stop = entry_range(source, t.num_entries, entry_start, entry_stop)
        try:
            bounds = [int(b) for b in t.common_entry_offsets(filter_name=list(_particle_branches(kinematic, ())))]
        except Exception:  # a damaged tree: let _read_range name the problem
            bounds = []
        for lo, hi in entry_ranges(bounds, start, stop, step):
            yield _read_range(t, source, lo, hi, tuple(label_branches), names,
                              tuple(extra_particle_branches), tuple(extra_jet_branches), kinematic)


def entry_ranges(bounds: Sequence[int], start: int, stop: int, step: int) -> list[tuple[int, int]]:
    """Ranges of at most `step` entries covering [start, stop), cut at basket boundaries
    (`bounds`: entries where the baskets of the particle branches, the bulk of the bytes, all
    begin) wherever one falls inside the step: a range ending inside a basket makes the next
    range decompress that basket again, which doubled the reading time of a 100k-jet file
    with 20k-entry baskets. A basket longer than `step` is still cut at `step`."""
    bounds = sorted(b for b in bounds if start < b < stop)
    ranges = []
    lo = start
    while lo < stop:
        limit = min(lo + step, stop)
        i = bisect.bisect_right(bounds, limit) - 1
        hi = bounds[i] if limit < stop and i >= 0 and bounds[i] > lo else limit
        ranges.append((lo, hi))
        lo = hi
    return ranges


@contextlib.contextmanager
def _open_tree(path: str | os.PathLike[str], tree: str) -> Iterator[uproot.TTree]:
    """Open `path` and yield its tree; a damaged or foreign file becomes a RecordError naming it."""
    source = os.fspath(path)
    try:
        file = uproot.open(source)
    except FileNotFoundError:
        raise
    except Exception as exc:  # uproot raises many types for damaged files
        raise RecordError(f"{source}: not a readable ROOT file ({type(exc).__name__}: {exc})") from exc
    with file:
        try:
            obj = file[tree]
        except Exception as exc:
            raise RecordError(f"{source}: no tree {tree!r} (keys: {file.keys()})") from exc
        if not hasattr(obj, "num_entries") or not hasattr(obj, "arrays"):
            raise RecordError(f"{source}: {tree!r} is a {type(obj).__name__}, not a tree")
        yield obj


def _class_names(label_branches: Sequence[str], class_names: Sequence[str] | None) -> tuple[str, ...]:
    if not label_branches:
        raise ValueError("label_branches must name at least one branch")
    names = tuple(class_names) if class_names is not None else tuple(b.removeprefix("label_") for b in label_branches)
    if len(names) != len(label_branches):
        raise ValueError(f"{len(names)} class names for {len(label_branches)} label branches")
    return names


def _kinematic(fields: Sequence[str] | None) -> tuple[str, ...]:
    """The kinematic Record fields to compute: those of `fields` this reader derives (extra
    branches are asked for by name), or all of them. Always at least one, for the counts."""
    if fields is None:
        return tuple(FIELD_BRANCHES)
    wanted = tuple(f for f in FIELD_BRANCHES if f in set(fields))
    return wanted or ("pt",)


def _particle_branches(kinematic: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
    needed = {b for f in kinematic for b in FIELD_BRANCHES[f]}
    return tuple(b for b in PARTICLE_BRANCHES if b in needed) + tuple(b for b in extra if b not in PARTICLE_BRANCHES)



def _read_range(tree, source: str, entry_start: int | None, entry_stop: int | None,
                label_branches: tuple[str, ...], class_names: tuple[str, ...],
                extra_particle: tuple[str, ...], extra_jet: tuple[str, ...],
                kinematic: tuple[str, ...]) -> Record:
    start, stop = entry_range(source, tree.num_entries, entry_start, entry_stop)
    particle_branches = _particle_branches(kinematic, extra_particle)
    jet_branches = JET_BRANCHES + tuple(b for b in extra_jet if b not in JET_BRANCHES)
    wanted = particle_branches + jet_branches + label_branches
    present = set(tree.keys())
    missing = [b for b in wanted if b not in present]
    if missing:
        raise RecordError(f"{source}: tree {tree.name!r} lacks branches {missing}")
    try:
        arrays = tree.arrays(filter_name=list(wanted), entry_start=start, entry_stop=stop, how=dict)
    except Exception as exc:  # truncated baskets, bad compression, wrong interpretation
        raise RecordError(f"{source}: cannot read entries {start}..{stop - 1} "
                          f"({type(exc).__name__}: {exc})") from exc

    where = f"{source}: entries {start}..{stop - 1}"
    first = particle_branches[0]
    counts = _counts(arrays[first], where, first)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat: dict[str, np.ndarray] = {}
    for branch in particle_branches:
        if branch != first and not np.array_equal(_counts(arrays[branch], where, branch), counts):
            raise RecordError(f"{where}: branch {branch!r} has different particle counts from {first!r}")
        flat[branch] = np.asarray(ak.flatten(arrays[branch], axis=1), dtype=np.float32)

    jets = {b: np.asarray(arrays[b], dtype=np.float64) for b in jet_branches}
    labels = _one_hot_labels(arrays, label_branches, source, start)

    fields = _kinematic_fields(flat, jets["jet_eta"], counts, kinematic)
    for branch in particle_branches:
        if branch not in PARTICLE_BRANCHES:
            name = branch.removeprefix("part_")
            _check_finite(flat[branch], offsets, source, start, branch)
            fields[name] = flat[branch]

    jet_pt, jet_eta, jet_energy = jets["jet_pt"], jets["jet_eta"], jets["jet_energy"]
    jet_p = jet_pt * np.cosh(jet_eta)
    mass2 = (jet_energy - jet_p) * (jet_energy + jet_p)
    jet_fields = {
        "pt": jet_pt.astype(np.float32),
        "eta": jet_eta.astype(np.float32),
        "phi": jets["jet_phi"].astype(np.float32),
        "energy": jet_energy.astype(np.float32),
        # float rounding can make E² − p² slightly negative for light jets: clip at 0
        "mass": np.sqrt(np.maximum(mass2, 0.0)).astype(np.float32),
        "n_particles": counts.astype(np.float32),
    }
    for branch in jet_branches:
        if branch not in JET_BRANCHES:
            jet_fields[branch.removeprefix("jet_")] = jets[branch].astype(np.float32)

    particles = jagged_record(offsets, fields)
    record = Record(particles=particles, jets=jet_fields, labels=labels, class_names=class_names,
                    source=source, entry_start=start, kind=KIND,
                    extra={"tree": tree.name, "entry_stop": stop})
    return record.validate(kinematic)


def _kinematic_fields(flat: dict[str, np.ndarray], jet_eta: np.ndarray, counts: np.ndarray,
                      kinematic: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The Record fields in `kinematic`, each computed once from the flat branches."""
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name in kinematic:
            if name in ("px", "py", "pz", "energy"):
                out[name] = flat[f"part_{name}"]
            elif name == "pt":
                out[name] = np.hypot(flat["part_px"], flat["part_py"])
            elif name == "eta":
                pt = out["pt"] if "pt" in out else np.hypot(flat["part_px"], flat["part_py"])
                out[name] = np.arcsinh(flat["part_pz"] / pt).astype(np.float32)
            elif name == "phi":
                out[name] = np.arctan2(flat["part_py"], flat["part_px"])
            elif name == "deta":
                out[name] = stored_deta(flat["part_deta"], np.repeat(jet_eta, counts)).astype(np.float32)
            elif name == "dphi":
                out[name] = wrap_phi(flat["part_dphi"])
    return out


def _counts(array: ak.Array, where: str, branch: str) -> np.ndarray:
    if array.ndim != 2:
        raise RecordError(f"{where}: branch {branch!r} is not a per-particle (jagged) branch: type {array.type}")
    return np.asarray(ak.num(array, axis=1), dtype=np.int64)


def _one_hot_labels(arrays: dict, label_branches: tuple[str, ...], source: str, start: int) -> np.ndarray:
    """Class indices from one-hot label branches of any numeric/bool dtype."""
    matrix = np.stack([np.asarray(arrays[b]).astype(np.float64) for b in label_branches], axis=1)
    valid = np.all((matrix == 0) | (matrix == 1), axis=1) & (matrix.sum(axis=1) == 1)
    if not np.all(valid):
        bad = int(np.flatnonzero(~valid)[0])
        values = dict(zip(label_branches, matrix[bad].tolist(), strict=True))
        raise RecordError(f"{source}: entry {start + bad}: labels are not one-hot "
                          f"(exactly one of {len(label_branches)} must be 1): {values}")
    return np.argmax(matrix, axis=1).astype(np.int64)


def _check_finite(values: np.ndarray, offsets: np.ndarray, source: str, start: int, branch: str) -> None:
    bad = ~np.isfinite(values)
    if np.any(bad):
        jet = int(np.searchsorted(offsets, np.flatnonzero(bad)[0], side="right") - 1)
        raise RecordError(f"{source}: entry {start + jet}: non-finite value in branch {branch!r}")
