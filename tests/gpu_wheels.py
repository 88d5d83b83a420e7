"""Wheels for a GPU node that cannot reach a package index (`make gpu-wheels`).

GPU nodes often have no internet, and their Python (an image's, a module's) already holds torch,
numpy and much else. This builds, on a machine that can reach PyPI, the folder of wheels that
`tests/gpu_check.py` installs there (`--no-deps`, into a scratch folder): exactly the distributions
that `pyproject.toml`'s dependencies need, at the versions this environment runs, minus what the
node already has, for the node's Python version and x86-64 Linux.

    python tests/gpu_wheels.py [--have FILE] [--python-version 3.12] [--dest .whl] [--budget-mib 60]

--have names the node's distributions, one per line (`pip list --format=freeze` there gives it; a
version after `==` is ignored); the default is tests/data/gpu_image_packages.txt, the CUDA image this
project's GPU check was prepared for. Two dependencies are left out because the check does not need
them and they are large: PuLP (16 MB; Snakemake falls back to its greedy scheduler) and PyTables with
its own dependencies (only the Top-tagging reader opens pandas HDF stores). The hdf5plugin wheel
(45 MB: twelve compression filters) is repacked with only the filter the shards use (Blosc). The
folder must fit a transfer budget (the device's is 64 MiB with the checkout), so the total is checked.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import io
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
HAVE = ROOT / "tests/data/gpu_image_packages.txt"
ALWAYS_THERE = {"torch", "triton"}  # a GPU node brings its own CUDA builds
NOT_FOR_THE_CHECK = {"pulp": "Snakemake schedules greedily without it",
                     "tables": "only the Top-tagging reader needs PyTables"}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34)] + ["manylinux2014_x86_64",
                                                                           "manylinux1_x86_64"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_have(path: Path) -> set[str]:
    """Distribution names from a freeze-style list (comments, blank lines and `==version` allowed)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalize(re.split(r"[=<>!~ @;\[]", line, maxsplit=1)[0]))
    return names


def top_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    return [Requirement(r) for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]


def closure(have: set[str], python_version: str) -> dict[str, str]:
    """{distribution: version} of everything the dependencies need that `have` lacks, walked through
    this environment's installed metadata (so the versions are the ones that run together here), with
    markers evaluated for the node: Linux, x86-64, `python_version`."""
    env = default_environment() | {"python_version": python_version, "python_full_version": f"{python_version}.0",
                                   "sys_platform": "linux", "platform_system": "Linux",
                                   "platform_machine": "x86_64", "extra": ""}
    skip = have | ALWAYS_THERE | set(NOT_FOR_THE_CHECK)
    found: dict[str, str] = {}
    todo = top_requirements()
    while todo:
        req = todo.pop()
        name = normalize(req.name)
        if (req.marker and not req.marker.evaluate(env)) or name in skip or name in found or name.startswith("nvidia-"):
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(f"gpu-wheels: {req.name} (needed by salt) is not installed in this environment "
                             f"({sys.executable}); run this with the project's venv (make venv)") from None
        found[name] = dist.version
        todo += [Requirement(r) for r in dist.requires or []]
    return dict(sorted(found.items()))


def download(pins: dict[str, str], dest: Path, python_version: str) -> None:
    """Binary wheels for the node; a distribution published only as an sdist is built here, and must
    come out pure Python."""
    pip = [sys.executable, "-m", "pip"]
    binary = [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
              "--python-version", python_version, "--implementation", "cp",
              *(f"--platform={p}" for p in PLATFORMS), "--platform=any"]
    for name, version in pins.items():
        if subprocess.run([*binary, f"{name}=={version}"], capture_output=True).returncode == 0:
            continue
        before = set(dest.glob("*.whl"))
        built = subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), f"{name}=={version}"],
                               capture_output=True, text=True)
        new = set(dest.glob("*.whl")) - before
        if built.returncode != 0 or not new:
            raise SystemExit(f"gpu-wheels: no wheel of {name}=={version} for Python {python_version} on x86-64 Linux, "
                             f"and building one failed:\n{built.stderr.strip()}")
        impure = [w.name for w in new if not w.name.endswith("-none-any.whl")]
        if impure:
            raise SystemExit(f"gpu-wheels: {name}=={version} has no binary wheel for the node; the one built here "
                             f"({impure[0]}) is for this machine only")


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def slim_hdf5plugin(wheel: Path, keep: set[str]) -> tuple[int, int]:
    """Repack an hdf5plugin wheel in place with only the filters in `keep`: the others' libraries go,
    and the build config no longer lists them, so importing it registers what is left without errors.
    RECORD is rewritten. Returns the sizes before and after."""
    before = wheel.stat().st_size
    with zipfile.ZipFile(wheel) as zin:
        entries = [(info, zin.read(info)) for info in zin.infolist()]
    config = next((i.filename for i, _ in entries if i.filename.endswith("hdf5plugin/_config.py")), None)
    if config is None:
        raise SystemExit(f"gpu-wheels: {wheel.name} has no hdf5plugin/_config.py; is it an hdf5plugin wheel?")
    text = dict((i.filename, d) for i, d in entries)[config].decode()
    embedded = re.search(r"'embedded_filters': \(([^)]*)\)", text)
    if embedded is None:
        raise SystemExit(f"gpu-wheels: {wheel.name}: no embedded_filters in {config}")
    filters = re.findall(r"'(\w+)'", embedded.group(1))
    if not keep <= set(filters):
        raise SystemExit(f"gpu-wheels: {wheel.name} lacks the filter(s) {sorted(keep - set(filters))}")
    kept = tuple(f for f in filters if f in keep)
    text = text.replace(embedded.group(0), f"'embedded_filters': {kept!r}")

    def dropped(path: str) -> bool:
        lib = re.search(r"/plugins/libh5(\w+?)\.\w+$", path)
        return bool(lib) and lib.group(1) not in keep

    out, lines, record = io.BytesIO(), [], None
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info, data in entries:
            if info.filename.endswith(".dist-info/RECORD"):
                record = info
                continue
            if dropped(info.filename):
                continue
            if info.filename == config:
                data = text.encode()
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            lines.append(record_line(info.filename, data))
        if record is None:
            raise SystemExit(f"gpu-wheels: {wheel.name} has no RECORD")
        zout.writestr(record, "\n".join([*lines, f"{record.filename},,"]) + "\n", compress_type=zipfile.ZIP_DEFLATED)
    wheel.write_bytes(out.getvalue())
    return before, wheel.stat().st_size


def shard_filters() -> set[str]:
    """The hdf5plugin filter the shards are written with (salt.data.shards.COMPRESSION)."""
    from salt.data.shards import COMPRESSION

    return {type(COMPRESSION).filter_name}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--have", type=Path, default=HAVE, help="the node's distributions (default: %(default)s)")
    p.add_argument("--python-version", default="3.12", help="the node's Python, major.minor (default %(default)s)")
    p.add_argument("--dest", type=Path, default=ROOT / ".whl", help="the wheel folder (default ./.whl), emptied first")
    p.add_argument("--budget-mib", type=float, default=60.0, help="fail when the wheels exceed this (default %(default)s)")
    args = p.parse_args()
    pins = closure(read_have(args.have), args.python_version)
    args.dest.mkdir(parents=True, exist_ok=True)
    for old in args.dest.glob("*.whl"):
        old.unlink()
    print(f"{len(pins)} distributions the node lacks: " + " ".join(f"{n}=={v}" for n, v in pins.items()))
    print("left out: " + "; ".join(f"{n} ({why})" for n, why in NOT_FOR_THE_CHECK.items()))
    with tempfile.TemporaryDirectory() as tmp:
        download(pins, Path(tmp), args.python_version)
        for wheel in Path(tmp).glob("*.whl"):
            wheel.rename(args.dest / wheel.name)
    for wheel in args.dest.glob("hdf5plugin-*.whl"):
        before, after = slim_hdf5plugin(wheel, shard_filters())
        print(f"{wheel.name}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB (only {', '.join(sorted(shard_filters()))})")
    wheels = sorted(args.dest.glob("*.whl"), key=lambda w: -w.stat().st_size)
    total = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels, {total:.1f} MiB in {args.dest}; largest: "
          + ", ".join(f"{w.name.split('-')[0]} {w.stat().st_size / 2**20:.1f}" for w in wheels[:4]))
    if total > args.budget_mib:
        print(f"gpu-wheels: {total:.1f} MiB is over the budget of {args.budget_mib} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
