"""The built-in dataset: labelled jets generated offline with Pythia8 + FastJet.

Why generate at all: the real datasets are tens to hundreds of GB behind a network we may
not have, while a physically meaningful five-class tagging task (like HLS4ML: g, q, W, Z,
t) can be made on a laptop in minutes. The files are written in the JetClass ROOT schema
(a TTree ``tree``, jagged ``part_*``, scalar ``jet_*``, one-hot ``label_*``), so the one
JetClass reader serves both.

Physics (particle level, no detector): pp at 13 TeV, anti-kT R = 0.8 jets built from the
final-state particles except neutrinos with pT above ``part_pt_min``, 500 < pT < 1000 GeV,
|eta| < 2.

- Constituent threshold: without one, Pythia jets hold every soft particle down to 1e-14 GeV
  (4-5 % of them below 0.1 GeV) and are far busier than the datasets the demo stands for:
  mean 83 constituents for g and t, 66 pooled over the five classes (5-95 %: 32-111), against
  HLS4ML's 49 stored constituents (5-95 %: 22-89), which a detector's thresholds and particle
  flow produce. The default ``part_pt_min`` (PART_PT_MIN = 0.6 GeV) brings the pooled
  multiplicity to that: mean 49.4, 5-95 % 24-83 (g 61, q 39, W 40, Z 43, t 64; measured on
  400 jets per class with benchmarks/demo_jets.py).

- W, Z, t: ``W(->qq)+jet``, ``Z(->qq)+jet`` and all-hadronic ``ttbar``. A jet is a signal
  jet when the resonance (its last copy before the decay, found by following the copy
  chain, including radiating copies such as t -> t g) and all its decay quarks (t: the b
  and the two quarks of the W) lie within ``match_radius`` of the jet axis (Delta R in
  eta-phi, quark directions taken at the decay). Unmatched jets (the recoil jet, partly
  contained decays) are dropped.
- q, g: ``HardQCD`` 2 -> 2. A jet takes the flavour of the nearest outgoing parton of the
  hardest process within ``match_radius``: |id| in 1..3 is q, 21 is g. Jets matched to c
  or b quarks, and jets matched to no hard parton, are dropped (they are neither class).
  Each job switches on only the 2 -> 2 subprocesses that have an outgoing parton of its
  class (g: gg->gg, qg->qg, qqbar->gg; q: gg->qqbar, qg->qg, qq->qq, qqbar->q'qbar'):
  a process without such a parton can never yield a jet of that class, and Pythia samples
  the remaining subprocesses with their own cross sections, so the accepted jets have
  exactly the distribution ``HardQCD:all`` would give them -- for less CPU.

Every accepted jet of the job's class in an event is kept (two top jets in a ttbar event,
up to two q or g jets in a dijet event), not just one per event: taking only the leading
jet would bias the pT spectrum and substructure, and keeping all gives 1.2x (q, g) and 1.3x
(t) more jets per event (measured). ``aux_event`` records which jets share an event.

Particles inside a jet are in descending pT order, as in the real files. ``part_deta`` uses
JetClass's sign convention (``salt.data.sources.jetclass.stored_deta``: flipped where
jet_eta <= 0), ``part_dphi`` is wrapped into [-pi, pi). PID flags follow ParT's converters:
charged hadrons (211, 321, 2212, and any other charged hadron), neutral hadrons (130, 2112
and any other neutral hadron), photons (22), electrons (+-11), muons (+-13).
``jet_sdmass`` is the soft-drop mass (beta = 0, z_cut = 0.1, R0 = R) of a C/A reclustering
of each jet's constituents, computed by fastjet-contrib's SoftDrop through scikit-hep
fastjet's multi-event interface (each jet is one "event"), so it is vectorised and exact
(its cost grows as n_constituents^2 inside the binding: ~15% of the time for top jets);
``jet_tau1..4`` are N-subjettiness values (normalised measure, beta = 1, one-pass kT axes)
from the same interface. Truth, never for training: ``aux_event`` (event number in the
run), ``aux_pthat``, ``aux_truth_pid/pt/eta/phi`` (the matched parton or resonance) and
``aux_truth_dr`` (largest Delta R of its members).

Reproducible: the same seed and settings give identical jets, whatever the batch size
(Pythia's random stream is consumed event by event; nothing is derived from the clock).
Pythia treats ``Random:seed = 0`` as "seed from the time", so seed 0 is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from salt.atomic import atomic_path, write_json
from salt.data.kinematics import wrap_phi
from salt.data.sources import Source
from salt.data.sources.jetclass import PID_BRANCHES, stored_deta

# The HLS4ML classes in its order (tests/test_metrics.py checks they agree; importing them from the
# hls4ml reader would make every edit of that reader regenerate the jets).
CLASSES = ("g", "q", "W", "Z", "t")
LABEL_BRANCHES = ("label_g", "label_q", "label_Wqq", "label_Zqq", "label_Tbqq")
# Generated files are read by the JetClass reader, with their own five label branches. A
# config may generate a subset of the classes; the labels keep the five-class order.
SOURCE = Source("pythia", reader="salt.data.sources.jetclass", kind="jet",
                defaults={"label_branches": list(LABEL_BRANCHES), "class_names": list(CLASSES)},
                extra_features=tuple(b.removeprefix("part_") for b in PID_BRANCHES))
TREE = "tree"
METADATA_KEY = "salt_generate"  # a TObjString beside the tree: the settings that made the file

SEED_MIN, SEED_MAX = 1, 900_000_000
# Hard-process pT window as fractions of the jet window. ISR recoil and extra radiation in the
# cone lift jets above their hard process's pT, so a pTHatMin near pt_min removes jets at the
# window's edge, and more of some classes than others. Measured at the default window
# (benchmarks/demo_jets.py, 600 jets per class generated with pTHatMin 250 GeV), the share of
# the 500-550 GeV jets that come from pTHat below a cut:
#   cut 450 GeV (0.9 pt_min):  g 41 %, q 18 %, W 18 %, Z 18 %, t 23 %   (shapes g apart)
#   cut 350 GeV (0.7 pt_min):  g 15 %, q 6 %,  W 3 %,  Z 4 %,  t 7 %
#   cut 300 GeV (0.6 pt_min):  g 2 %,  q 1.5 %, W 0.5 %, Z 1 %, t 3.5 %  (the default)
# At 300 GeV the classes' edge shares differ from unbiased ones by less than the demo's
# statistical error on them (~2.5 %). It costs 5-6x the events of 450 GeV (g 9.8 events per
# jet against 1.5; W 10.2 against 2.0) and about 3-4x the time. Passing --pthat-min overrides it.
PTHAT_MIN_FRACTION = 0.6
PART_PT_MIN = 0.6  # GeV: the constituent threshold (see the module doc)
PTHAT_MAX_FRACTION = 1.1  # no QCD jet in the window came from pTHat > 1050 GeV (with pTHatMax 1300)

_W_DECAY = ("24:onMode = off", "24:onIfAny = 1 2 3 4 5")
PROCESS_SETTINGS: dict[str, tuple[str, ...]] = {
    "g": ("HardQCD:gg2gg = on", "HardQCD:qg2qg = on", "HardQCD:qqbar2gg = on"),
    "q": ("HardQCD:gg2qqbar = on", "HardQCD:qg2qg = on", "HardQCD:qq2qq = on",
          "HardQCD:qqbar2qqbarNew = on"),
    "W": ("WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on") + _W_DECAY,
    "Z": ("WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on",
          "WeakZ0:gmZmode = 2", "23:onMode = off", "23:onIfAny = 1 2 3 4 5"),
    "t": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on") + _W_DECAY,
}
# Verbosity only. Hadronisation, MPI, decays and the event check stay at Pythia's defaults
# (switching the check off gained nothing measurable and would let a broken event through).
COMMON_SETTINGS = (
    "Print:quiet = on",
    "Next:numberCount = 0",
)
_RESONANCE_ID = {"W": 24, "Z": 23, "t": 6}
_NEUTRINOS = (12, 14, 16)
_LIGHT_QUARKS = (1, 2, 3)
_GLUON = 21
_MAX_COPY_DEPTH = 500
_FLUSH_JETS = 20_000  # jets per basket written; bigger baskets read faster


class GenerationError(RuntimeError):
    """Generation could not reach the requested number of jets."""


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------

def generate(
    process: str,
    n_jets: int,
    seed: int,
    output: str | Path,
    *,
    pt_min: float = 500.0,
    pt_max: float = 1000.0,
    eta_max: float = 2.0,
    radius: float = 0.8,
    match_radius: float = 0.8,
    ecm: float = 13000.0,
    part_pt_min: float | None = None,
    pthat_min: float | None = None,
    pthat_max: float | None = None,
    batch_events: int = 200,
    max_events: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate `n_jets` jets of class `process` into the ROOT file `output` (atomically).

    `part_pt_min` (GeV, default PART_PT_MIN): final-state particles below it are not clustered.
    `pthat_min`/`pthat_max` default to PTHAT_MIN_FRACTION * pt_min and 1.1 * pt_max. `max_events` (default
    max(100000, 500 * n_jets)) bounds the run: a window that yields no jets raises
    GenerationError instead of running forever. Returns a summary: events generated, jets
    in the window, jets accepted, efficiency, wall time, settings.
    """
    _check_arguments(process, n_jets, seed, pt_min, pt_max, eta_max, radius, match_radius, ecm, batch_events)
    part_pt_min = PART_PT_MIN if part_pt_min is None else float(part_pt_min)
    if not 0 <= part_pt_min < pt_min or not math.isfinite(part_pt_min):
        raise ValueError(f"part_pt_min must be in [0, pt_min), got {part_pt_min!r}")
    pthat_min = PTHAT_MIN_FRACTION * pt_min if pthat_min is None else float(pthat_min)
    pthat_max = PTHAT_MAX_FRACTION * pt_max if pthat_max is None else float(pthat_max)
    if not 0 <= pthat_min < pthat_max:
        raise ValueError(f"need 0 <= pthat_min < pthat_max, got {pthat_min}, {pthat_max}")
    max_events = max(100_000, 500 * n_jets) if max_events is None else int(max_events)
    pythia_settings = COMMON_SETTINGS + PROCESS_SETTINGS[process] + (
        f"Beams:eCM = {ecm:g}",
        f"PhaseSpace:pTHatMin = {pthat_min:g}",
        f"PhaseSpace:pTHatMax = {pthat_max:g}",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
    )
    window = _Window(pt_min, pt_max, eta_max, radius, match_radius, part_pt_min)
    metadata = {
        "generator": "salt.data.pythia", "process": process, "class_index": CLASSES.index(process),
        "classes": list(CLASSES), "label_branches": list(LABEL_BRANCHES), "seed": seed, "n_jets": n_jets,
        "pt_min": pt_min, "pt_max": pt_max, "eta_max": eta_max, "radius": radius,
        "match_radius": match_radius, "ecm": ecm, "part_pt_min": part_pt_min,
        "pthat_min": pthat_min, "pthat_max": pthat_max,
        "pythia_settings": list(pythia_settings), "libraries": _library_versions(),
    }

    start = time.perf_counter()
    pythia = _make_pythia(pythia_settings)
    fastjet = _import_fastjet()
    n_accepted = n_written = n_in_window = n_tried = n_generated = 0
    with atomic_path(output) as tmp, _JetWriter(tmp, process, metadata) as writer, \
            _progress_bar(n_jets, process, progress) as bar:
        while n_written < n_jets:
            if n_tried >= max_events:
                raise GenerationError(
                    f"process {process!r}: only {n_written} of {n_jets} jets after {n_tried} events "
                    f"(window pT {pt_min:g}..{pt_max:g} GeV, |eta| < {eta_max:g}); raise max_events "
                    "or widen the window")
            n_request = _next_batch_size(n_jets - n_written, n_accepted, n_tried, batch_events,
                                         max_events - n_tried)
            events = pythia.nextBatch(n_request)  # failed events are skipped, as the tries count
            n_tried += n_request
            if len(events) == 0:
                continue
            jets, n_window = _process_batch(events, process, window, fastjet, pythia.particleData,
                                            event_offset=n_generated)
            n_generated += len(events)
            n_in_window += n_window
            n_new = len(jets["jet_pt"])
            n_accepted += n_new
            n_keep = min(n_new, n_jets - n_written)  # the first n_jets jets, in generation order
            if n_keep:
                writer.add(_first_jets(jets, n_keep))
                n_written += n_keep
                bar.update(n_keep)
    elapsed = time.perf_counter() - start
    return {
        **{k: metadata[k] for k in ("process", "class_index", "seed", "n_jets")},
        "output": str(output),
        "events_tried": n_tried,
        "events_generated": n_generated,
        "events_failed": n_tried - n_generated,
        "jets_in_window": n_in_window,
        "jets_accepted": n_accepted,
        "jets_written": n_written,
        "efficiency_jets_per_event": n_accepted / max(n_generated, 1),
        "wall_time_s": round(elapsed, 3),
        "jets_per_second": round(n_jets / elapsed, 2) if elapsed > 0 else None,
        "settings": metadata,
    }


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--process", required=True, choices=CLASSES,
                        help="jet class to generate: g, q (QCD dijets), W, Z (boson+jet), t (ttbar)")
    parser.add_argument("--jets", type=int, required=True, help="number of labelled jets to write")
    parser.add_argument("--seed", type=int, required=True,
                        help=f"Pythia random seed, {SEED_MIN}..{SEED_MAX} (0 would mean 'seed from the clock')")
    parser.add_argument("--output", type=Path, required=True, help="ROOT file to write (TTree 'tree')")
    parser.add_argument("--pt-min", type=float, default=500.0, help="jet pT lower bound, GeV (default 500)")
    parser.add_argument("--pt-max", type=float, default=1000.0, help="jet pT upper bound, GeV (default 1000)")
    parser.add_argument("--eta-max", type=float, default=2.0, help="jet |eta| bound (default 2)")
    parser.add_argument("--radius", type=float, default=0.8, help="anti-kT radius (default 0.8)")
    parser.add_argument("--match-radius", type=float, default=0.8,
                        help="Delta R for truth matching to the jet axis (default 0.8)")
    parser.add_argument("--ecm", type=float, default=13000.0, help="pp centre-of-mass energy, GeV (default 13000)")
    parser.add_argument("--part-pt-min", type=float, default=None,
                        help=f"constituent threshold: final-state particles below this pT (GeV) are not "
                             f"clustered (default {PART_PT_MIN:g})")
    parser.add_argument("--pthat-min", type=float, default=None,
                        help=f"hard-process pT lower bound, GeV (default {PTHAT_MIN_FRACTION} * pt-min)")
    parser.add_argument("--pthat-max", type=float, default=None,
                        help=f"hard-process pT upper bound, GeV (default {PTHAT_MAX_FRACTION} * pt-max)")
    parser.add_argument("--batch-events", type=int, default=200,
                        help="events per Pythia batch (memory vs overhead; does not change the jets)")
    parser.add_argument("--max-events", type=int, default=None,
                        help="give up after this many events (default max(100000, 500 * jets))")
    parser.add_argument("--summary", type=Path, default=None, help="also write a JSON summary here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    try:
        summary = generate(
            args.process, args.jets, args.seed, args.output,
            pt_min=args.pt_min, pt_max=args.pt_max, eta_max=args.eta_max, radius=args.radius,
            match_radius=args.match_radius, ecm=args.ecm, part_pt_min=args.part_pt_min, pthat_min=args.pthat_min,
            pthat_max=args.pthat_max, batch_events=args.batch_events, max_events=args.max_events,
            progress=not args.quiet,
        )
    except (ValueError, GenerationError) as exc:
        print(f"salt generate: error: {exc}", file=sys.stderr)
        return 2
    if args.summary is not None:
        from salt.provenance import provenance

        write_json(args.summary, {**summary, "provenance": provenance(device="cpu")})
    print(f"{summary['jets_written']} {args.process} jets -> {args.output} "
          f"({summary['events_generated']} events, {summary['wall_time_s']:.1f} s, "
          f"{summary['jets_per_second']:.1f} jets/s)", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Window:
    pt_min: float
    pt_max: float
    eta_max: float
    radius: float
    match_radius: float
    part_pt_min: float


def _check_arguments(process: str, n_jets: int, seed: int, pt_min: float, pt_max: float, eta_max: float,
                     radius: float, match_radius: float, ecm: float, batch_events: int) -> None:
    if process not in PROCESS_SETTINGS:
        raise ValueError(f"unknown process {process!r}; expected one of {list(CLASSES)}")
    if isinstance(n_jets, bool) or int(n_jets) != n_jets or n_jets < 1:
        raise ValueError(f"n_jets must be a positive integer, got {n_jets!r}")
    if isinstance(seed, bool) or int(seed) != seed or not SEED_MIN <= seed <= SEED_MAX:
        raise ValueError(f"seed must be an integer in {SEED_MIN}..{SEED_MAX} (Pythia's range; "
                         f"0 would seed from the clock), got {seed!r}")
    if not 0 <= pt_min < pt_max:
        raise ValueError(f"need 0 <= pt_min < pt_max, got {pt_min}, {pt_max}")
    for name, value in (("eta_max", eta_max), ("radius", radius), ("match_radius", match_radius),
                        ("ecm", ecm)):
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if batch_events < 1:
        raise ValueError(f"batch_events must be >= 1, got {batch_events}")


def _make_pythia(settings: Sequence[str]):
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)  # no banner
    for line in settings:
        if not pythia.readString(line):
            raise ValueError(f"Pythia rejected the setting {line!r}")
    if not pythia.init():
        raise GenerationError(f"Pythia failed to initialise with settings {list(settings)}")
    return pythia


def _import_fastjet():
    import fastjet
    import vector

    vector.register_awkward()
    # The banner would go to stdout on the first clustering; the swig and pybind modules
    # share libfastjet, so this silences both.
    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
    return fastjet


def _next_batch_size(remaining: int, accepted: int, tried: int, batch_events: int, budget: int) -> int:
    """Ask for about as many events as the remaining jets need (the jets do not depend on it)."""
    if accepted == 0:
        want = remaining if tried == 0 else batch_events
    else:
        want = math.ceil(1.2 * remaining * tried / accepted) + 1
    return max(1, min(want, batch_events, budget))


def _process_batch(events: ak.Array, process: str, window: _Window, fastjet, particle_data,
                   event_offset: int) -> tuple[dict[str, np.ndarray], int]:
    """Cluster one batch of events and return the accepted jets (flat arrays) and the window count."""
    prt = events.prt
    n_events = len(prt)
    counts = np.asarray(ak.num(prt.id, axis=1), dtype=np.int64)
    truth = _EventTable(prt, counts)

    # final state: status > 0, no neutrinos, above the constituent threshold
    final = (truth.status > 0) & ~np.isin(np.abs(truth.pid), _NEUTRINOS)
    if window.part_pt_min > 0:
        final &= np.hypot(truth.px, truth.py) >= window.part_pt_min
    fs_counts = np.bincount(truth.event[final], minlength=n_events).astype(np.int64)
    fs_offsets = _offsets(fs_counts)
    fs = {name: getattr(truth, name)[final] for name in ("px", "py", "pz", "e", "pid")}
    particles = ak.to_packed(ak.unflatten(
        ak.zip({"px": fs["px"], "py": fs["py"], "pz": fs["pz"], "E": fs["e"]}, with_name="Momentum4D"),
        fs_counts))

    sequence = fastjet.ClusterSequence(particles, fastjet.JetDefinition(fastjet.antikt_algorithm, window.radius))
    jets = sequence.inclusive_jets(min_pt=window.pt_min)
    constituents = sequence.constituent_index(min_pt=window.pt_min)  # same jets, same order
    jets_per_event = np.asarray(ak.num(jets, axis=1), dtype=np.int64)
    jet_event = np.repeat(np.arange(n_events), jets_per_event)
    jpx, jpy, jpz, je = (np.asarray(ak.flatten(jets[c], axis=1), dtype=np.float64) for c in ("px", "py", "pz", "E"))
    jpt = np.hypot(jpx, jpy)
    with np.errstate(divide="ignore", invalid="ignore"):
        jeta = np.arcsinh(jpz / jpt)
    jphi = np.arctan2(jpy, jpx)
    in_window = (jpt > window.pt_min) & (jpt < window.pt_max) & (np.abs(jeta) < window.eta_max)

    match = _match(process, truth, jet_event, jeta, jphi, window.match_radius, n_events)
    accept = in_window & match["accepted"]
    # within an event, jets in descending pT (fastjet's inclusive order is not sorted)
    selected = np.flatnonzero(accept)
    selected = selected[np.lexsort((-jpt[selected], jet_event[selected]))]

    # constituents of the accepted jets: local indices -> flat final-state indices
    per_jet = ak.flatten(constituents, axis=1)
    n_cons = np.asarray(ak.num(per_jet, axis=1), dtype=np.int64)[selected]
    local = ak.flatten(per_jet[selected], axis=1)
    part_jet = np.repeat(np.arange(len(selected)), n_cons)
    flat_index = np.asarray(local, dtype=np.int64) + fs_offsets[jet_event[selected]][part_jet]
    px, py, pz, e, pid = (fs[k][flat_index] for k in ("px", "py", "pz", "e", "pid"))
    pt = np.hypot(px, py)
    order = np.lexsort((-pt, part_jet))  # pT-descending inside each jet, stable
    px, py, pz, e, pid, pt = px[order], py[order], pz[order], e[order], pid[order], pt[order]

    out = _jet_features(px, py, pz, e, pt, pid, n_cons, jpx[selected], jpy[selected], jpz[selected],
                        je[selected], window.radius, fastjet, particle_data)
    out["aux_event"] = (event_offset + jet_event[selected]).astype(np.int32)
    pthat = np.sqrt(np.asarray(events.info.pT2Hat, dtype=np.float64))
    out["aux_pthat"] = pthat[jet_event[selected]].astype(np.float32)
    for key in ("truth_pid", "truth_pt", "truth_eta", "truth_phi", "truth_dr"):
        dtype = np.int32 if key == "truth_pid" else np.float32
        out[f"aux_{key}"] = match[key][selected].astype(dtype)
    return out, int(np.count_nonzero(in_window))


class _EventTable:
    """The batch's full event records as flat numpy arrays with global indices.

    Daughter indices are converted from per-event to global indices, so copy chains and
    decays are followed with plain fancy indexing over the whole batch at once.
    """

    def __init__(self, prt: ak.Array, counts: np.ndarray):
        offsets = _offsets(counts)
        self.event = np.repeat(np.arange(len(counts)), counts)
        base = offsets[self.event]
        flat = lambda x: np.asarray(ak.flatten(x, axis=1))  # noqa: E731
        self.pid = flat(prt.id).astype(np.int64)
        self.status = flat(prt.status).astype(np.int64)
        self.d1 = flat(prt.daughter1).astype(np.int64) + base
        self.d2 = flat(prt.daughter2).astype(np.int64) + base
        self.has_d1 = flat(prt.daughter1) > 0
        self.has_d2 = flat(prt.daughter2) > 0
        mom = prt.p
        self.px, self.py, self.pz, self.e = (flat(mom[c]).astype(np.float64) for c in ("px", "py", "pz", "e"))

    def pt_eta_phi(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        px, py, pz = self.px[index], self.py[index], self.pz[index]
        pt = np.hypot(px, py)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.arcsinh(pz / pt)
        return pt, eta, np.arctan2(py, px)

    def last_copy(self, index: np.ndarray) -> np.ndarray:
        """Follow each particle's copy chain (recoil copies and radiating copies such as t -> t g)."""
        index = np.asarray(index, dtype=np.int64)
        for _ in range(_MAX_COPY_DEPTH):
            same1 = self.has_d1[index] & (self.pid[self.d1[index]] == self.pid[index])
            same2 = self.has_d2[index] & (self.pid[self.d2[index]] == self.pid[index])
            nxt = np.where(same1, self.d1[index], np.where(same2, self.d2[index], index))
            if np.array_equal(nxt, index):
                return index
            index = nxt
        raise GenerationError(f"copy chain longer than {_MAX_COPY_DEPTH} entries in the event record")

    def two_body_daughters(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Daughters of decaying particles; `ok` is False where the decay is not 2-body."""
        d1, d2 = self.d1[index], self.d2[index]
        ok = self.has_d1[index] & self.has_d2[index] & (d2 == d1 + 1)
        return np.where(ok, d1, index), np.where(ok, d2, index), ok


def _match(process: str, truth: _EventTable, jet_event: np.ndarray, jeta: np.ndarray, jphi: np.ndarray,
           match_radius: float, n_events: int) -> dict[str, np.ndarray]:
    """Per-jet truth: accepted (matched to the job's class) and the matched object's kinematics.

    Each truth object comes with the particles that must all lie within `match_radius` of
    the jet axis (QCD: the parton alone; signal: resonance and decay quarks). A jet is
    matched to the object whose farthest member is nearest, if that distance is inside.
    """
    if process in ("q", "g"):
        objects = np.flatnonzero(np.abs(truth.status) == 23)  # outgoing partons of the hardest process
        groups = [objects]
    else:
        objects, groups = _resonances(process, truth)
    n_obj = np.bincount(truth.event[objects], minlength=n_events)
    n_jet = np.bincount(jet_event, minlength=n_events)
    jets_eta, jets_phi = ak.unflatten(jeta, n_jet), ak.unflatten(jphi, n_jet)

    worst = None  # events x jets x objects: the largest Delta R of the object's members
    for members in groups:
        _, m_eta, m_phi = truth.pt_eta_phi(members)
        dr = _delta_r_pairs(jets_eta, jets_phi, ak.unflatten(m_eta, n_obj), ak.unflatten(m_phi, n_obj))
        worst = dr if worst is None else np.maximum(worst, dr)
    best_local = np.asarray(ak.fill_none(ak.flatten(ak.argmin(worst, axis=2)), -1), dtype=np.int64)
    best_dr = np.asarray(ak.fill_none(ak.flatten(ak.min(worst, axis=2)), np.inf), dtype=np.float64)
    matched = (best_local >= 0) & (best_dr < match_radius)
    # index into `objects`, with one sentinel entry (id 0, NaN kinematics) for unmatched jets
    best = np.where(matched, _offsets(n_obj)[jet_event] + best_local, len(objects))
    pt, eta, phi = (np.append(v, np.nan) for v in truth.pt_eta_phi(objects))
    pid = np.append(truth.pid[objects], 0)[best]
    if process == "q":
        accepted = matched & np.isin(np.abs(pid), _LIGHT_QUARKS)
    elif process == "g":
        accepted = matched & (pid == _GLUON)
    else:
        accepted = matched
    return {
        "accepted": accepted,
        "truth_pid": pid,
        "truth_pt": pt[best], "truth_eta": eta[best], "truth_phi": phi[best],
        "truth_dr": np.where(matched, best_dr, np.nan),
    }


def _resonances(process: str, truth: _EventTable) -> tuple[np.ndarray, list[np.ndarray]]:
    """Last copies of the hard resonances and, per resonance, the objects that must be matched.

    Returns (resonances, groups): groups[0] is the resonance itself, then its decay quarks
    (W/Z: q, q'; t: b, q, q' of the W). Resonances with an unexpected decay are left out.
    """
    rid = _RESONANCE_ID[process]
    absid = np.abs(truth.pid)
    first = np.flatnonzero((absid == rid) & (np.abs(truth.status) == 22))
    # copies of a resonance have status != 22, so `first` holds only the hard-process entries
    res = truth.last_copy(first)
    a, b, ok = truth.two_body_daughters(res)
    if process == "t":
        w_first = np.where(np.abs(truth.pid[a]) == 24, a, b)
        quark_b = np.where(np.abs(truth.pid[a]) == 24, b, a)
        ok &= (np.abs(truth.pid[w_first]) == 24) & np.isin(np.abs(truth.pid[quark_b]), (1, 2, 3, 4, 5))
        q1, q2, ok_w = truth.two_body_daughters(truth.last_copy(w_first))
        ok &= ok_w
        decay = [quark_b, q1, q2]
    else:
        q1, q2 = a, b
        decay = [q1, q2]
    for q in decay[-2:]:
        ok &= np.isin(np.abs(truth.pid[q]), (1, 2, 3, 4, 5))
    keep = np.flatnonzero(ok)
    groups = [res[keep]] + [q[keep] for q in decay]
    return res[keep], groups


def _delta_r_pairs(jets_eta: ak.Array, jets_phi: ak.Array, obj_eta: ak.Array, obj_phi: ak.Array) -> ak.Array:
    """Delta R of every (jet, object) pair within each event: events x jets x objects."""
    jets = ak.zip({"eta": jets_eta, "phi": jets_phi})
    objects = ak.zip({"eta": obj_eta, "phi": obj_phi})
    jet, obj = ak.unzip(ak.cartesian([jets, objects], axis=1, nested=True))
    return np.hypot(jet.eta - obj.eta, wrap_phi(jet.phi - obj.phi))


def _jet_features(px, py, pz, e, pt, pid, n_cons, jpx, jpy, jpz, je, radius, fastjet, particle_data
                  ) -> dict[str, np.ndarray]:
    """JetClass-schema arrays for the accepted jets (particles already pT-ordered)."""
    n = len(n_cons)
    part_jet = np.repeat(np.arange(n), n_cons)
    jet_pt = np.hypot(jpx, jpy)
    with np.errstate(divide="ignore", invalid="ignore"):
        jet_eta = np.arcsinh(jpz / jet_pt)
        eta = np.arcsinh(pz / pt)
    jet_phi = np.arctan2(jpy, jpx)
    deta = eta - jet_eta[part_jet]
    dphi = wrap_phi(np.arctan2(py, px) - jet_phi[part_jet])
    charge, is_hadron = _pid_properties(pid, particle_data)
    absid = np.abs(pid)
    flags = {
        "isChargedHadron": is_hadron & (charge != 0),  # with Pythia's default decays: 211, 321, 2212
        "isNeutralHadron": is_hadron & (charge == 0),  # 130, 2112
        "isPhoton": pid == 22,
        "isElectron": absid == 11,
        "isMuon": absid == 13,
    }
    part = {
        "px": px, "py": py, "pz": pz, "energy": e,
        "deta": stored_deta(deta, jet_eta[part_jet]), "dphi": dphi,
        "charge": charge,
        **{name: flag.astype(np.int32) for name, flag in flags.items()},
    }
    groomed = _substructure(px, py, pz, e, n_cons, radius, fastjet)
    out: dict[str, np.ndarray] = {"_n_particles": n_cons}
    out.update({f"part_{k}": (v if v.dtype == np.int32 else v.astype(np.float32)) for k, v in part.items()})
    out.update({
        "jet_pt": jet_pt, "jet_eta": jet_eta, "jet_phi": jet_phi, "jet_energy": je,
        "jet_sdmass": groomed["sdmass"], "jet_nparticles": n_cons,
        "jet_tau1": groomed["tau"][:, 0], "jet_tau2": groomed["tau"][:, 1],
        "jet_tau3": groomed["tau"][:, 2], "jet_tau4": groomed["tau"][:, 3],
    })
    for key in list(out):
        if key.startswith("jet_"):
            out[key] = np.asarray(out[key], dtype=np.float32)
    return out


def _substructure(px, py, pz, e, n_cons, radius, fastjet) -> dict[str, np.ndarray]:
    """Soft-drop mass and N-subjettiness, every jet treated as one 'event' of its constituents.

    Each jet's constituents are reclustered with C/A at a radius large enough that
    exclusive_jets(1) is the whole jet (no beam merging), and fastjet-contrib's SoftDrop
    walks that C/A tree: beta = 0, z_cut = 0.1, R0 = the jet radius.
    """
    if len(n_cons) == 0:
        return {"sdmass": np.zeros(0), "tau": np.zeros((0, 4))}
    jets = ak.to_packed(ak.unflatten(ak.zip({"px": px, "py": py, "pz": pz, "E": e}, with_name="Momentum4D"),
                                     n_cons))
    sequence = fastjet.ClusterSequence(jets, fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
    sd = sequence.exclusive_jets_softdrop_grooming(njets=1, beta=0.0, symmetry_cut=0.1,
                                                   symmetry_measure="scalar_z", R0=radius)
    tau = sequence.njettiness(njets=[1, 2, 3, 4], beta=1.0, R0=radius)
    return {"sdmass": np.asarray(sd.msoftdrop, dtype=np.float64),
            "tau": np.asarray(tau, dtype=np.float64).reshape(len(n_cons), 4)}


def _pid_properties(pid: np.ndarray, particle_data) -> tuple[np.ndarray, np.ndarray]:
    """Charge and is-hadron per particle from Pythia's particle table (looked up per distinct id)."""
    ids, inverse = np.unique(pid, return_inverse=True)
    charge = np.array([particle_data.charge(int(i)) for i in ids], dtype=np.float64)
    hadron = np.array([particle_data.isHadron(int(i)) for i in ids], dtype=bool)
    return charge[inverse], hadron[inverse]


def _first_jets(arrays: dict[str, np.ndarray], n_jets: int) -> dict[str, np.ndarray]:
    """The first `n_jets` jets of a batch and their particles."""
    n_part = int(arrays["_n_particles"][:n_jets].sum())
    return {key: value[:n_part] if key.startswith("part_") else value[:n_jets] for key, value in arrays.items()}


class _JetWriter:
    """Streams jets into a TTree (not an RNTuple: mktree/extend, never ``file[name] = ...``).

    Batches are buffered and written in chunks of about _FLUSH_JETS jets, so memory stays
    bounded and baskets are big enough to read fast. Particles share one counter ``npart``.
    The label branches (all five, the file's own class = 1) and a TObjString with the
    generation settings are added here.
    """

    def __init__(self, path: Path, process: str, metadata: dict[str, Any]):
        self.path, self.process, self.metadata = path, process, metadata
        self.buffer: list[dict[str, np.ndarray]] = []
        self.n_buffered = 0
        self.file = self.tree = None

    def __enter__(self) -> "_JetWriter":
        import uproot

        self.file = uproot.recreate(self.path)
        return self

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        self.buffer.append(arrays)
        self.n_buffered += len(arrays["jet_pt"])
        if self.n_buffered >= _FLUSH_JETS:
            self._flush()

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self._flush()
                self.file[METADATA_KEY] = json.dumps(self.metadata, sort_keys=True)
        finally:
            self.file.close()

    def _flush(self) -> None:
        if not self.buffer:
            return
        arrays = {key: np.concatenate([b[key] for b in self.buffer]) for key in self.buffer[0]}
        self.buffer, self.n_buffered = [], 0
        n = len(arrays["jet_pt"])
        own = CLASSES.index(self.process)
        arrays.update({b: np.full(n, int(i == own), dtype=np.int32) for i, b in enumerate(LABEL_BRANCHES)})
        part_fields = [k for k in arrays if k.startswith("part_")]
        names = [k.removeprefix("part_") for k in part_fields]
        scalars = [k for k in arrays if not k.startswith(("part_", "_"))]
        if self.tree is None:
            part_type = ak.types.ListType(ak.types.RecordType(
                [ak.types.NumpyType(_ak_primitive(arrays[k].dtype)) for k in part_fields], names))
            self.tree = self.file.mktree(TREE, {"part": part_type, **{k: arrays[k].dtype for k in scalars}},
                                         title="jets generated by salt (Pythia8 + FastJet)")
        content = ak.contents.RecordArray([ak.contents.NumpyArray(arrays[k]) for k in part_fields], names,
                                          length=len(arrays[part_fields[0]]))
        offsets = _offsets(arrays["_n_particles"], with_end=True)
        part = ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), content))
        self.tree.extend({"part": part, **{k: arrays[k] for k in scalars}})


def _ak_primitive(dtype: np.dtype) -> str:
    return {np.dtype(np.float32): "float32", np.dtype(np.int32): "int32"}[np.dtype(dtype)]


def _offsets(counts: np.ndarray, with_end: bool = False) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out if with_end else out[:-1]


def _library_versions() -> dict[str, str]:
    import importlib.metadata

    return {name: importlib.metadata.version(name) for name in ("pythia8mc", "fastjet", "awkward", "uproot")}


class _progress_bar:
    """tqdm on stderr, or nothing."""

    def __init__(self, total: int, process: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="jet", desc=f"generate {process}", file=sys.stderr,
                            dynamic_ncols=True)

    def __enter__(self):
        return self

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
