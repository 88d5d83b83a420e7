"""Writers of tiny files in the exact on-disk formats of the real datasets.

Used by the reader unit tests and by the workflow tests: no network reaches Zenodo, so
every stage is exercised on files that have the real layout (tree and branch names and
dtypes, HDF5 dataset names and shapes, archive member paths, the OFF quirks), filled with
physically consistent random content.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from salt.data.sources.jetclass import JETCLASS_LABELS, stored_deta

# ---------------------------------------------------------------------------------------
# JetClass: ROOT TTree "tree" (uproot mktree: `f[name] = ...` would write an RNTuple)
# ---------------------------------------------------------------------------------------

# dtypes of the label branches in the real files (the example file mixes float32/bool/int32)
_JETCLASS_LABEL_DTYPES = {
    "label_QCD": np.float32, "label_Hbb": np.bool_, "label_Hcc": np.bool_, "label_Hgg": np.bool_,
    "label_H4q": np.bool_, "label_Hqql": np.bool_, "label_Zqq": np.int32, "label_Wqq": np.int32,
    "label_Tbqq": np.int32, "label_Tbl": np.int32,
}
_CYCLE_DTYPES = (np.float32, np.bool_, np.int32)


def jetclass_branches(
    n_jets: int,
    seed: int = 0,
    label_branches: Sequence[str] = JETCLASS_LABELS,
    classes: Sequence[int] | int | None = None,
    mean_particles: float = 40.0,
    max_particles: int = 128,
    with_pid: bool = True,
    with_tracks: bool = True,
) -> dict[str, object]:
    """Branch name -> array for `n_jets` random but consistent jets in the JetClass schema.

    Jets are the 4-vector sum of their (massless) particles, so jet_pt/eta/phi/energy,
    part_deta (sign-flipped as in the real files) and part_dphi agree with part_px..energy.
    `classes`: one class for the whole file (as in JetClass), per-jet indices, or random.
    Tests may edit the returned arrays (inject NaN, break a label) before writing.
    """
    rng = np.random.default_rng(seed)
    n_labels = len(label_branches)
    if classes is None:
        cls = rng.integers(0, n_labels, n_jets)
    elif np.isscalar(classes):
        cls = np.full(n_jets, int(classes))
    else:
        cls = np.asarray(classes, dtype=np.int64)
    counts = np.clip(rng.poisson(mean_particles, n_jets), 1, max_particles)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n_part = int(offsets[-1])
    jet_of = np.repeat(np.arange(n_jets), counts)

    axis_eta = rng.uniform(-2.0, 2.0, n_jets)
    axis_phi = rng.uniform(-np.pi, np.pi, n_jets)
    axis_pt = rng.uniform(500.0, 1000.0, n_jets)
    # momentum fractions: exponential weights normalised per jet, so particles are soft-ish
    w = rng.exponential(1.0, n_part)
    frac = w / np.bincount(jet_of, weights=w, minlength=n_jets)[jet_of]
    pt = frac * axis_pt[jet_of]
    eta = axis_eta[jet_of] + rng.normal(0.0, 0.15, n_part)
    phi = axis_phi[jet_of] + rng.normal(0.0, 0.15, n_part)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = pt * np.cosh(eta)
    # pT-descending within each jet, as in the real files
    order = np.lexsort((-pt, jet_of))
    px, py, pz, energy = px[order], py[order], pz[order], energy[order]

    sums = {k: np.bincount(jet_of, weights=v, minlength=n_jets) for k, v in
            (("px", px), ("py", py), ("pz", pz), ("e", energy))}
    jet_pt = np.hypot(sums["px"], sums["py"])
    jet_eta = np.arcsinh(sums["pz"] / jet_pt)
    jet_phi = np.arctan2(sums["py"], sums["px"])
    p_pt = np.hypot(px, py)
    deta = np.arcsinh(pz / p_pt) - jet_eta[jet_of]
    dphi = np.mod(np.arctan2(py, px) - jet_phi[jet_of] + np.pi, 2 * np.pi) - np.pi

    def jag(flat: np.ndarray, dtype=np.float32) -> ak.Array:
        return ak.unflatten(np.asarray(flat, dtype=dtype), counts)

    part = {"px": px, "py": py, "pz": pz, "energy": energy,
            "deta": stored_deta(deta, jet_eta[jet_of]), "dphi": dphi}
    if with_pid:
        kind = rng.integers(0, 5, n_part)
        charge = np.where(kind == 0, rng.choice([-1.0, 1.0], n_part), 0.0)
        charge = np.where(kind == 3, -1.0, np.where(kind == 4, 1.0, charge))
        part["charge"] = charge
        for i, name in enumerate(("isChargedHadron", "isNeutralHadron", "isPhoton", "isElectron", "isMuon")):
            part[name] = (kind == i).astype(np.int32)
    if with_tracks:
        charged = part.get("charge", rng.choice([-1.0, 0.0, 1.0], n_part)) != 0
        for name, scale in (("d0val", 0.05), ("d0err", 0.01), ("dzval", 0.1), ("dzerr", 0.02)):
            part[name] = np.where(charged, np.abs(rng.normal(0, scale, n_part)) if "err" in name
                                  else rng.normal(0, scale, n_part), 0.0)

    branches: dict[str, object] = {}
    for name, flat in part.items():
        branches[f"part_{name}"] = jag(flat, np.int32 if name.startswith("is") else np.float32)
    mass = np.sqrt(np.maximum(sums["e"] ** 2 - sums["px"] ** 2 - sums["py"] ** 2 - sums["pz"] ** 2, 0))
    branches.update({
        "jet_pt": jet_pt.astype(np.float32), "jet_eta": jet_eta.astype(np.float32),
        "jet_phi": jet_phi.astype(np.float32), "jet_energy": sums["e"].astype(np.float32),
        "jet_nparticles": counts.astype(np.float32), "jet_sdmass": (0.9 * mass).astype(np.float32),
    })
    for k in range(1, 5):
        branches[f"jet_tau{k}"] = rng.uniform(0, 0.5, n_jets).astype(np.float32)
    for i, name in enumerate(label_branches):
        dtype = _JETCLASS_LABEL_DTYPES.get(name, _CYCLE_DTYPES[i % len(_CYCLE_DTYPES)])
        branches[name] = (cls == i).astype(dtype)
    return branches


def write_jetclass_root(path: str | os.PathLike[str], branches: Mapping[str, object],
                        tree: str = "tree", batch: int = 20_000) -> Path:
    """Write `branches` as a ROOT TTree; jagged part_* branches share one counter `npart`."""
    import uproot

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    jagged = {k.removeprefix("part_"): v for k, v in branches.items() if k.startswith("part_")}
    flat = {k: np.asarray(v) for k, v in branches.items() if not k.startswith("part_")}
    n = len(next(iter(flat.values()))) if flat else len(next(iter(jagged.values())))
    part = ak.zip(jagged) if jagged else None
    types: dict[str, object] = {k: v.dtype for k, v in flat.items()}
    if part is not None:
        types = {"part": part.type.content, **types}
    with uproot.recreate(path) as f:
        t = f.mktree(tree, types)
        for lo in range(0, n, batch):
            chunk = {k: v[lo:lo + batch] for k, v in flat.items()}
            if part is not None:
                chunk["part"] = part[lo:lo + batch]
            t.extend(chunk)
    return path


def write_jetclass_file(path: str | os.PathLike[str], n_jets: int, seed: int = 0, **kwargs) -> Path:
    """A JetClass-format ROOT file of `n_jets` jets (see `jetclass_branches` for options)."""
    return write_jetclass_root(path, jetclass_branches(n_jets, seed=seed, **kwargs))


# ---------------------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------------------

def write_tar(path: str | os.PathLike[str], members: Mapping[str, bytes | os.PathLike[str] | str],
              compression: str = "") -> Path:
    """A tar (compression "" or "gz") holding `members`: arcname -> bytes or a file to add."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, f"w:{compression}" if compression else "w") as tar:
        for arcname, content in members.items():
            if isinstance(content, bytes):
                info = tarfile.TarInfo(arcname)
                info.size = len(content)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(content))
            else:
                tar.add(os.fspath(content), arcname=arcname, recursive=False)
    return path


def write_jetclass_tar(path: str | os.PathLike[str], root_files: Sequence[os.PathLike[str] | str],
                       folder: str = "val_5M") -> Path:
    """A JetClass-style plain tar: val/test tars hold `<folder>/<Process>_<NNN>.root`."""
    prefix = f"{folder}/" if folder else ""
    return write_tar(path, {prefix + Path(f).name: Path(f) for f in root_files})


# ---------------------------------------------------------------------------------------
# hls4ml LHC jet dataset (150 particles): HDF5 files in train/ and val/ tar.gz archives
# ---------------------------------------------------------------------------------------

HLS4ML_PARTICLE_NAMES = (
    "j1_px", "j1_py", "j1_pz", "j1_e", "j1_erel", "j1_pt", "j1_ptrel", "j1_eta", "j1_etarel",
    "j1_etarot", "j1_phi", "j1_phirel", "j1_phirot", "j1_deltaR", "j1_costheta", "j1_costhetarel",
    "j1_pdgid",  # 17 names for 16 columns, as in the real files
)
# Jet column names: the label columns 53..58 are as documented; the others are close approximations.
HLS4ML_JET_NAMES = (
    ("j_ptfrac", "j_pt", "j_eta", "j_mass")
    + tuple(f"j_tau{i}_b{b}" for b in (1, 2) for i in (1, 2, 3)) + ("j_tau32_b1", "j_tau32_b2", "j_zlogz")
    + tuple(f"j_c{i}_b{b}" for i in (1, 2) for b in (0, 1, 2)) + ("j_d2_b1", "j_d2_b2", "j_d2_a1_b1", "j_d2_a1_b2")
    + ("j_m2_b1", "j_m2_b2", "j_n2_b1")
    + tuple(f"j_mmdt_{x}" for x in ("tau1_b1", "tau2_b1", "tau3_b1", "tau1_b2", "tau2_b2", "tau3_b2",
                                    "tau32_b1", "tau32_b2", "zlogz", "c1_b0", "c1_b1", "c1_b2", "c2_b0", "c2_b1",
                                    "c2_b2", "d2_b1", "d2_b2", "d2_a1_b1", "d2_a1_b2", "m2_b1", "m2_b2"))
    + ("j_mass_trim", "j_mass_mmdt", "j_mass_prun", "j_mass_sdb2", "j_mass_sdm1", "j_multiplicity")
    + ("j_g", "j_q", "j_w", "j_z", "j_t", "j_undef")
)
assert len(HLS4ML_JET_NAMES) == 59, len(HLS4ML_JET_NAMES)


def hls4ml_arrays(n_jets: int, seed: int = 0, n_slots: int = 150, classes: Sequence[int] | None = None,
                  empty_jets: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """`jetConstituentList` (n, n_slots, 16) and `jets` (n, 59) float64, consistent with each other.

    Constituents are pT-descending and zero-padded; about a fifth are below the 2 GeV cut.
    Jets listed in `empty_jets` get only constituents below 2 GeV (the reader drops them).
    """
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 5, n_jets) if classes is None else np.asarray(classes)
    const = np.zeros((n_jets, n_slots, 16))
    jets = rng.normal(0.0, 1.0, (n_jets, 59))
    for j in range(n_jets):
        m = int(rng.integers(3, min(80, n_slots) + 1))
        pt = np.sort(np.concatenate([rng.exponential(40.0, m - m // 5) + 2.5, rng.uniform(0.5, 2.0, m // 5)]))[::-1]
        if j in set(empty_jets):
            pt = np.sort(rng.uniform(0.5, 2.0, m))[::-1]
        jet_eta, jet_phi = rng.uniform(-2, 2), rng.uniform(-np.pi, np.pi)
        etarel, phirel = rng.normal(0, 0.2, m), rng.normal(0, 0.2, m)
        eta = jet_eta + etarel
        phi = np.mod(jet_phi + phirel + np.pi, 2 * np.pi) - np.pi
        phirel = np.mod(phi - jet_phi + np.pi, 2 * np.pi) - np.pi
        px, py, pz, e = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)
        jpx, jpy, jpz, je = px.sum(), py.sum(), pz.sum(), e.sum()
        jpt = np.hypot(jpx, jpy)
        c = const[j, :m]
        c[:, 0], c[:, 1], c[:, 2], c[:, 3] = px, py, pz, e
        c[:, 4], c[:, 5], c[:, 6] = e / je, pt, pt / jpt
        c[:, 7], c[:, 8], c[:, 9] = eta, etarel, etarel * 0.9
        c[:, 10], c[:, 11], c[:, 12] = phi, phirel, phirel * 0.9
        c[:, 13] = np.hypot(etarel, phirel)
        c[:, 14] = pz / np.sqrt(px**2 + py**2 + pz**2)
        c[:, 15] = np.cos(c[:, 13])
        jets[j, 0], jets[j, 1], jets[j, 2] = 1.0, jpt, jet_eta
        jets[j, 3] = np.sqrt(max(je**2 - jpx**2 - jpy**2 - jpz**2, 0.0))
        jets[j, 52] = m
    jets[:, 53:59] = 0.0
    jets[np.arange(n_jets), 53 + cls] = 1.0
    return {"jetConstituentList": const, "jets": jets}


def write_hls4ml_h5(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray],
                    image_shape: tuple[int, int] = (100, 100)) -> Path:
    """An hls4ml h5 file: the two arrays, both name lists, and the (zero) jet images."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(arrays["jets"])
    with h5py.File(path, "w") as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=value)
        f.create_dataset("particleFeatureNames", data=np.array([s.encode() for s in HLS4ML_PARTICLE_NAMES]))
        f.create_dataset("jetFeatureNames", data=np.array([s.encode() for s in HLS4ML_JET_NAMES]))
        for name in ("jetImage", "jetImageECAL", "jetImageHCAL"):
            f.create_dataset(name, shape=(n, *image_shape), dtype="f8", compression="gzip", fillvalue=0.0)
    return path


def write_hls4ml_tarball(path: str | os.PathLike[str], split: str, n_files: int = 2,
                         jets_per_file: int = 20, seed: int = 0, scratch: os.PathLike[str] | None = None) -> Path:
    """`hls4ml_LHCjet_150p_{train,val}.tar.gz` with `<split>/jetImage_<k>_150p_<start>_<stop>.h5`."""
    path = Path(path)
    scratch = Path(scratch) if scratch is not None else path.parent / f".{path.name}.members"
    members = {}
    for k in range(n_files):
        start, stop = k * jets_per_file, (k + 1) * jets_per_file
        name = f"jetImage_{k}_150p_{start}_{stop}.h5"
        members[f"{split}/{name}"] = write_hls4ml_h5(scratch / split / name,
                                                     hls4ml_arrays(jets_per_file, seed=seed * 1000 + k))
    return write_tar(path, members, compression="gz")


# ---------------------------------------------------------------------------------------
# ModelNet10: OFF meshes in ModelNet10/<class>/<split>/<class>_<NNNN>.off inside a zip
# ---------------------------------------------------------------------------------------

def box_mesh(size: Sequence[float] = (1.0, 1.0, 1.0), offset: Sequence[float] = (0.0, 0.0, 0.0)
             ) -> tuple[np.ndarray, list[list[int]]]:
    """A box with 6 quad faces (ModelNet meshes mix triangles and quads)."""
    sx, sy, sz = size
    v = np.array([[x, y, z] for x in (0, sx) for y in (0, sy) for z in (0, sz)], dtype=float) + np.asarray(offset)
    faces = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    return v, faces


def tetra_mesh(scale: float = 1.0) -> tuple[np.ndarray, list[list[int]]]:
    """A tetrahedron with triangle faces."""
    v = scale * np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    return v, [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]


def off_text(vertices: np.ndarray, faces: Sequence[Sequence[int]], glued: bool = False) -> str:
    """OFF text; `glued` writes the header as ModelNet often does: `OFF<nv> <nf> 0` on one line."""
    head = f"OFF{len(vertices)} {len(faces)} 0\n" if glued else f"OFF\n{len(vertices)} {len(faces)} 0\n"
    body = "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices)
    body += "".join(f"{len(f)} {' '.join(map(str, f))}\n" for f in faces)
    return head + body


def write_off(path: str | os.PathLike[str], vertices: np.ndarray, faces: Sequence[Sequence[int]],
              glued: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(off_text(vertices, faces, glued))
    return path


MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa",
                      "table", "toilet")


def modelnet10_members(classes: Sequence[str] = MODELNET10_CLASSES[:3], n_train: int = 2, n_test: int = 1,
                       seed: int = 0) -> dict[str, bytes]:
    """Zip members of a small ModelNet10.zip, including the `__MACOSX/` AppleDouble junk.

    Shapes alternate between quad boxes and triangle tetrahedra of random size, and every
    other file has the glued header.
    """
    rng = np.random.default_rng(seed)
    members: dict[str, bytes] = {}
    i = 0
    for cls in classes:
        for split, n in (("train", n_train), ("test", n_test)):
            for k in range(1, n + 1):
                if i % 2 == 0:
                    v, f = box_mesh(rng.uniform(0.5, 30.0, 3), rng.uniform(-5, 5, 3))
                else:
                    v, f = tetra_mesh(rng.uniform(0.5, 30.0))
                name = f"ModelNet10/{cls}/{split}/{cls}_{k:04d}.off"
                members[name] = off_text(v, f, glued=(i % 2 == 1)).encode()
                members[f"__MACOSX/ModelNet10/{cls}/{split}/._{cls}_{k:04d}.off"] = b"\x00\x05\x16\x07junk"
                i += 1
    return members


def write_zip(path: str | os.PathLike[str], members: Mapping[str, bytes]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def write_modelnet10_zip(path: str | os.PathLike[str], **kwargs) -> Path:
    """A ModelNet10.zip in the real layout (see `modelnet10_members`)."""
    return write_zip(path, modelnet10_members(**kwargs))


# ---------------------------------------------------------------------------------------
# Top tagging (Zenodo 2603256): a pandas HDF store, key "table", PyTables "table" format
# ---------------------------------------------------------------------------------------

def top_frame(n_jets: int, seed: int = 0, ttv: int = 0, n_slots: int = 200, mean_particles: float = 40.0):
    """The real 806 columns: E_i, PX_i, PY_i, PZ_i (float32, zero-padded, pT-descending), truthE..PZ,
    ttv and is_signal_new (int64), with a shuffled index as in the real files."""
    import pandas as pd

    from salt.data.sources import toptagging

    rng = np.random.default_rng(seed)
    values = np.zeros((n_jets, n_slots, 4), dtype=np.float32)
    label = rng.integers(0, 2, n_jets)
    truth = np.zeros((n_jets, 4), dtype=np.float32)
    for j in range(n_jets):
        m = int(np.clip(rng.poisson(mean_particles), 1, n_slots))
        jet_eta, jet_phi = rng.uniform(-2, 2), rng.uniform(-np.pi, np.pi)
        pt = np.sort(rng.exponential(600.0 / m, m) + 0.5)[::-1]
        eta, phi = jet_eta + rng.normal(0, 0.2, m), jet_phi + rng.normal(0, 0.2, m)
        values[j, :m] = np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=1)
        if label[j]:
            truth[j] = values[j, :m].sum(axis=0) * 1.02
    frame = pd.DataFrame(values.reshape(n_jets, -1), columns=toptagging.particle_columns(n_slots))
    for i, name in enumerate(toptagging.TRUTH_COLUMNS):
        frame[name] = truth[:, i]
    frame["ttv"] = np.full(n_jets, ttv, dtype=np.int64)
    frame["is_signal_new"] = label.astype(np.int64)
    frame.index = rng.permutation(n_jets * 3)[:n_jets]
    return frame


def write_top_store(path: str | os.PathLike[str], frame) -> Path:
    """`frame` as the real files store it: key "table", format "table" (table/table + table/_i_table)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_hdf(path, key="table", format="table", mode="w")
    return path


# ---------------------------------------------------------------------------------------
# Quark-gluon jets (EnergyFlow, Zenodo 3164691): npz with X (n, M, 4) and y
# ---------------------------------------------------------------------------------------

QG_PIDS = (22, 211, -211, 321, -321, 130, 2112, -2112, 2212, -2212, 11, -11, 13, -13)


def qg_arrays(n_jets: int, seed: int = 0, mean_particles: float = 30.0) -> dict[str, np.ndarray]:
    """X (n, M, 4) float64 = (pT, rapidity, phi, PDG id), zero-padded to the largest multiplicity M;
    y (n,) float64, quark = 1. Phi lies within pi of the jet, in [0, 2 pi) as in the real files."""
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.poisson(mean_particles, n_jets), 1, None)
    x = np.zeros((n_jets, int(counts.max()), 4))
    for j, m in enumerate(counts):
        jet_y, jet_phi = rng.uniform(-1.7, 1.7), rng.uniform(0.5, 2 * np.pi - 0.5)
        x[j, :m, 0] = rng.exponential(500.0 / m, m) + 0.1
        x[j, :m, 1] = jet_y + rng.normal(0, 0.1, m)
        x[j, :m, 2] = jet_phi + rng.normal(0, 0.1, m)
        x[j, :m, 3] = rng.choice(QG_PIDS, m)
    return {"X": x, "y": rng.integers(0, 2, n_jets).astype(np.float64)}


def write_qg_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path
