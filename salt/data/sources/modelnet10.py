"""ModelNet10 meshes (OFF files) as point clouds: the paper's non-jet benchmark.

Layout after extraction: ``ModelNet10/<class>/{train,test}/<class>_<NNNN>.off``; class
indices are the sorted class folder names (PyG's convention: bathtub 0 ... toilet 9).

The unit of reading is one class/split folder (e.g. ``ModelNet10/chair/train``, at most
889 shapes): one OFF file per Record would make thousands of tiny shards' worth of jobs,
while a whole split mixes classes that preprocessing can just as well concatenate. A single
OFF file is accepted too (tests, inspection).

Each shape becomes `num_points` surface points drawn area-weighted (uniform on the surface,
so big flat faces are not under-sampled as vertex sampling would do), from a generator
seeded by (seed, "<class>/<split>/<file>"): the same points whatever order files are read
in. Points are centred on their centroid and scaled so the farthest point is at radius 1.

OFF quirks handled: the glued header ``OFF1046 900 0``, ``#`` comments, quads and larger
polygons (fan-split into triangles), trailing per-face colour values.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from salt.data.record import Record, RecordError
from salt.data.sources import Catalogue, FileSpec, Source, jagged_record

KIND = "points"
NUM_POINTS = 1024
DEFAULT_STEP = 1_000
CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")


def member_class(member: str) -> str:
    """The class of an archive member ModelNet10/<class>/<split>/..."""
    return member.split("/")[1]


# Read per class/split folder: ModelNet10/<class>/{train,test}/*.off. No published md5.
SOURCE = Source(
    "modelnet10", reader=__name__, kind=KIND, classes_option="classes", member_class=member_class,
    catalogue=Catalogue("http://3dvision.princeton.edu/projects/2014/3DShapeNets/{name}", {"ModelNet10.zip": FileSpec(
        None, members=tuple(f"ModelNet10/{c}/{s}/" for c in CLASSES for s in ("train", "test")))}))


def class_names(root: str | os.PathLike[str]) -> tuple[str, ...]:
    """Sorted class folder names of a ModelNet root (hidden and __MACOSX folders ignored)."""
    root = Path(root)
    names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))))
    if not names:
        raise RecordError(f"{root}: no class folders (expected ModelNet10/<class>/{{train,test}}/*.off)")
    return names


def read(path: str | os.PathLike[str], num_points: int = NUM_POINTS, seed: int = 0,
         classes: Sequence[str] | None = None, files: Sequence[Path] | None = None) -> Record:
    """Point clouds of every OFF file in a class/split folder (or of one OFF file).

    `classes` defaults to the sorted class folders of the dataset root (two levels above
    a folder). `files` restricts reading to these files of the folder (used by iter_records).
    """
    path = Path(path)
    offs = list(files) if files is not None else _off_files(path)
    if not offs:
        raise RecordError(f"{path}: no .off files")
    unit = path.parent if path.is_file() else path
    root = unit.parent.parent
    names = tuple(classes) if classes is not None else class_names(root)
    cls = unit.parent.name
    if cls not in names:
        raise RecordError(f"{path}: class folder {cls!r} is not one of {names}")

    clouds, scales = [], []
    for off in offs:
        vertices, triangles = read_off(off)
        rel = f"{cls}/{unit.name}/{off.name}"
        rng = np.random.default_rng([seed, zlib.crc32(rel.encode())])
        points = sample_surface(vertices, triangles, num_points, rng, source=off)
        points, scale = normalise_unit_sphere(points)
        clouds.append(points)
        scales.append(scale)
    pts = np.concatenate(clouds).astype(np.float32)
    offsets = np.arange(len(offs) + 1, dtype=np.int64) * num_points
    particles = jagged_record(offsets, {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]})
    n = len(offs)
    record = Record(
        particles=particles,
        jets={"n_particles": np.full(n, num_points, dtype=np.float32), "scale": np.asarray(scales, np.float32)},
        labels=np.full(n, names.index(cls), dtype=np.int64), class_names=names, source=str(path), kind=KIND,
        extra={"files": [o.name for o in offs], "split": unit.name, "num_points": num_points, "seed": seed},
    )
    return record.validate()


def iter_records(path: str | os.PathLike[str], step: int = DEFAULT_STEP, num_points: int = NUM_POINTS,
                 seed: int = 0, classes: Sequence[str] | None = None,
                 fields: Sequence[str] | None = None) -> Iterator[Record]:
    """Records of at most `step` shapes of one class/split folder (or one OFF file).

    `fields` is accepted for the sources' common signature: points always carry x, y, z."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    path = Path(path)
    offs = _off_files(path)
    if not offs:
        raise RecordError(f"{path}: no .off files")
    for lo in range(0, len(offs), step):
        rec = read(path, num_points=num_points, seed=seed, classes=classes, files=offs[lo:lo + step])
        rec.entry_start = lo
        yield rec


def _off_files(path: Path) -> list[Path]:
    """The OFF file itself, or a folder's OFF files by name (macOS "._*" resource forks skipped)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob("*.off") if not p.name.startswith("."))


def read_off(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (n, 3) float64, triangles (m, 3) int64) of an OFF mesh; polygons are fan-split.

    Numbers are parsed block-wise by numpy's C parser; only when that fails is the file
    walked line by line, to name the offending line.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not a text OFF file ({exc})") from exc
    data = [i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")]
    if not data or not lines[data[0]].lstrip().startswith("OFF"):
        raise RecordError(f"{path}: line 1: expected 'OFF' header")
    head = lines[data[0]].lstrip()[3:].split()  # ModelNet glues the counts on: 'OFF1046 900 0'
    data = data[1:]
    if not head and data:
        head, data = lines[data[0]].split(), data[1:]
    try:
        nv, nf = int(head[0]), int(head[1])
    except (ValueError, IndexError) as exc:
        raise RecordError(f"{path}: bad counts line {' '.join(head)!r} "
                          "(expected 'n_vertices n_faces n_edges')") from exc
    if len(data) < nv + nf:
        raise RecordError(f"{path}: truncated: header promises {nv} vertices and {nf} faces, "
                          f"file has {len(data)} data lines")
    vertices = _parse_vertices(path, lines, data[:nv])
    flat, lengths = _parse_faces(path, lines, data[nv:nv + nf])

    starts = np.zeros(nf, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    k = flat[starts] if nf else np.zeros(0, dtype=np.int64)
    bad = (k < 3) | (lengths < k + 1)  # extra tokens after the indices (colours) are allowed
    if np.any(bad):
        line = data[nv + int(np.flatnonzero(bad)[0])] + 1
        raise RecordError(f"{path}: line {line}: expected a face 'k i1 ... ik' with k >= 3")
    triangles = []
    for size in np.unique(k):  # one vectorised pass per polygon size (3 and 4 in practice)
        sel = starts[k == size]
        idx = flat[sel[:, None] + 1 + np.arange(size)]  # (m, size)
        fan = np.arange(1, size - 1)
        tri = np.stack([np.repeat(idx[:, :1], size - 2, axis=1), idx[:, fan], idx[:, fan + 1]], axis=2)
        triangles.append(tri.reshape(-1, 3))
    tris = np.concatenate(triangles) if triangles else np.zeros((0, 3), dtype=np.int64)
    if tris.size and (tris.min() < 0 or tris.max() >= nv):
        raise RecordError(f"{path}: face vertex index outside 0..{nv - 1}")
    return vertices, tris


def _parse_vertices(path: Path, lines: list[str], rows: list[int]) -> np.ndarray:
    try:
        values = np.fromstring("\n".join(lines[i] for i in rows), dtype=np.float64, sep=" ")
    except ValueError:
        values = np.zeros(0)
    if values.size != 3 * len(rows):  # a bad token, or extra columns (colours): go line by line
        out = np.empty((len(rows), 3))
        for j, i in enumerate(rows):
            try:
                out[j] = [float(t) for t in lines[i].split()[:3]]
            except ValueError:
                raise RecordError(f"{path}: line {i + 1}: expected a vertex 'x y z'") from None
        values = out
    vertices = values.reshape(len(rows), 3)
    finite = np.isfinite(vertices).all(axis=1)
    if not finite.all():
        raise RecordError(f"{path}: line {rows[int(np.flatnonzero(~finite)[0])] + 1}: non-finite vertex coordinate")
    return vertices


def _parse_faces(path: Path, lines: list[str], rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """All face tokens as one int array, and the number of tokens on each face line."""
    block = "\n".join(lines[i] for i in rows)
    chars = np.frombuffer(block.encode(), dtype=np.uint8)
    blank = (chars == 32) | (chars == 9) | (chars == 10) | (chars == 13)
    token_start = ~blank & np.concatenate([[True], blank[:-1]])
    line_of = np.cumsum(chars == 10)
    lengths = np.bincount(line_of[token_start], minlength=len(rows))
    try:
        flat = np.fromstring(block, dtype=np.int64, sep=" ")
    except ValueError:
        flat = np.zeros(0, dtype=np.int64)
    if flat.size != lengths.sum():
        for i in rows:
            try:
                [int(t) for t in lines[i].split()]
            except ValueError:
                raise RecordError(f"{path}: line {i + 1}: expected integer face entries 'k i1 ... ik'") from None
        raise RecordError(f"{path}: cannot parse the face lines {rows[0] + 1}..{rows[-1] + 1}")
    return flat, lengths


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, n: int, rng: np.random.Generator,
                   source: str | os.PathLike[str] = "<mesh>") -> np.ndarray:
    """`n` points uniform on the mesh surface: area-weighted triangle choice, uniform barycentric."""
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        raise RecordError(f"{source}: mesh has no surface area ({len(triangles)} triangles)")
    cdf = np.cumsum(area)
    pick = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(area) - 1)
    r1, r2 = np.sqrt(rng.random((n, 1))), rng.random((n, 1))
    return (1 - r1) * a[pick] + r1 * (1 - r2) * b[pick] + r1 * r2 * c[pick]


def normalise_unit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre on the centroid, scale so the farthest point is at radius 1; returns (points, scale)."""
    centred = points - points.mean(axis=0)
    scale = float(np.sqrt((centred**2).sum(axis=1)).max())
    return (centred / scale if scale > 0 else centred), scale
