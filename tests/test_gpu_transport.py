"""How the GPU check reaches a node with no package index: tests/gpu_wheels.py picks and repacks the
wheels, tests/gpu_check.py installs them into a scratch folder and runs with them. All on the CPU."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check  # noqa: E402
import gpu_wheels  # noqa: E402

CONFIG = ("from collections import namedtuple\n"
          "Config = namedtuple('Config', ('filter_file_extension', 'embedded_filters'))\n"
          "build_config = Config(**{'filter_file_extension': '.so', "
          "'embedded_filters': ('blosc', 'blosc2', 'bshuf', 'zstd')})\n")


def plugin_wheel(folder: Path) -> Path:
    """A wheel laid out as hdf5plugin's: the build config lists the filters, plugins/ holds one
    library per filter (blosc2's name starts with blosc's)."""
    files = {"hdf5plugin/__init__.py": b"from ._config import build_config\n",
             "hdf5plugin/_config.py": CONFIG.encode(),
             **{f"hdf5plugin/plugins/libh5{name}.so": name.encode() * 1000 for name in ("blosc", "blosc2", "bshuf", "zstd")},
             "hdf5plugin-7.1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: hdf5plugin\nVersion: 7.1.0\n",
             "hdf5plugin-7.1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: py3-none-any\n"}
    wheel = folder / "hdf5plugin-7.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("hdf5plugin-7.1.0.dist-info/RECORD", "")
    return wheel


def test_slimmed_plugin_keeps_one_filter_and_a_valid_record(tmp_path):
    wheel = plugin_wheel(tmp_path)
    before, after = gpu_wheels.slim_hdf5plugin(wheel, {"blosc"})
    assert after < before
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "hdf5plugin/plugins/libh5blosc.so" in names
        assert not {"hdf5plugin/plugins/libh5blosc2.so", "hdf5plugin/plugins/libh5zstd.so"} & names
        rows = list(csv.reader(io.StringIO(z.read("hdf5plugin-7.1.0.dist-info/RECORD").decode())))
        for path, digest, size in rows:
            if path.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = z.read(path)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)
        assert {r[0] for r in rows} == names
    # pip takes it, and the package sees only what is left
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True)
    out = subprocess.run([sys.executable, "-c", "import hdf5plugin; print(hdf5plugin.build_config.embedded_filters)"],
                         cwd=tmp_path / "site", capture_output=True, text=True, check=True).stdout
    assert out.strip() == "('blosc',)"


def test_slimming_refuses_a_filter_the_wheel_lacks(tmp_path):
    wheel = plugin_wheel(tmp_path)
    with pytest.raises(SystemExit, match="lacks the filter"):
        gpu_wheels.slim_hdf5plugin(wheel, {"lz4"})
    assert "hdf5plugin/plugins/libh5zstd.so" in zipfile.ZipFile(wheel).namelist()  # untouched


def test_the_shards_filter_is_the_one_kept():
    assert gpu_wheels.shard_filters() == {"blosc"}


def test_have_lists_read_names_from_freeze_output(tmp_path):
    have = tmp_path / "have.txt"
    have.write_text("# a node\nNumPy==2.5.2\ntyping_extensions\n\nfoo.bar @ file:///x\ntorch==2.11.0+cu130  # CUDA\n")
    assert gpu_wheels.read_have(have) == {"numpy", "typing-extensions", "foo-bar", "torch"}


def test_closure_brings_what_the_image_lacks_at_the_versions_that_run_here():
    pins = gpu_wheels.closure(gpu_wheels.read_have(gpu_wheels.HAVE), "3.12")
    for needed in ("snakemake", "pythia8mc", "fastjet", "hdf5plugin", "uproot", "awkward", "jsonschema"):
        assert pins[needed] == importlib.metadata.version(needed)
    for there in ("numpy", "h5py", "pandas", "torch", "pyyaml", "tqdm"):  # the image's own
        assert there not in pins
    assert not {"pulp", "tables"} & pins.keys()  # left out on purpose
    assert "numpy" in gpu_wheels.closure(set(), "3.12")


def test_check_environment_puts_the_wheels_and_pythia_data_in_reach(tmp_path):
    site = tmp_path / "site"
    (site / "share/Pythia8/xmldoc").mkdir(parents=True)
    env = gpu_check.environment(tmp_path / "scratch", site)
    assert env["PYTHIA8DATA"] == str(site / "share/Pythia8/xmldoc")
    assert env["PYTHONPATH"].split(":")[:2] == [str(gpu_check.ROOT), str(site)]
    launcher = tmp_path / "scratch/bin/salt"
    assert env["PATH"].split(":")[0] == str(launcher.parent)
    assert subprocess.run([str(launcher), "--help"], env=env, capture_output=True).returncode == 0
    assert gpu_check.environment(tmp_path / "scratch", None).get("PYTHIA8DATA") == os.environ.get("PYTHIA8DATA")


def test_installs_only_the_wheels_of_what_is_missing(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    plugin_wheel(wheels)  # hdf5plugin: installed here, so left alone
    lonely = wheels / "salt_gpu_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(lonely, "w") as z:
        z.writestr("salt_gpu_probe.py", "X = 1\n")
        z.writestr("salt_gpu_probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: salt-gpu-probe\nVersion: 1.0\n")
        z.writestr("salt_gpu_probe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("salt_gpu_probe-1.0.dist-info/RECORD", "")
    saved = list(sys.path)
    try:
        site = gpu_check.install_wheels(wheels, tmp_path / "scratch")
        assert site is not None and (site / "salt_gpu_probe.py").exists()
        assert not (site / "hdf5plugin").exists()
        assert (site / ".installed").read_text() == str(lonely)
    finally:
        sys.path[:] = saved


def test_requirements_the_node_does_not_meet_are_named(tmp_path):
    """A wheel that needs a distribution the node lacks, or has at a version it refuses, is named
    with both versions; what is met, what only an extra asks for and what gpu_wheels leaves out
    (PuLP) is not."""
    site = tmp_path / "site"
    info = site / "salt_gpu_probe-1.0.dist-info"
    info.mkdir(parents=True)
    here = importlib.metadata.version("packaging")
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: salt-gpu-probe\nVersion: 1.0\n"
        f"Requires-Dist: packaging>={here}\nRequires-Dist: packaging<0.1\n"
        "Requires-Dist: salt-no-such-distribution>=1\nRequires-Dist: pulp>=2\n"
        "Requires-Dist: salt-another-missing; extra == 'docs'\n")
    assert gpu_check.unmet_requirements(site) == [
        f"salt-gpu-probe 1.0 (a wheel) needs packaging<0.1: found {here}",
        "salt-gpu-probe 1.0 (a wheel) needs salt-no-such-distribution>=1: not installed"]


def test_the_check_says_so_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run([sys.executable, str(gpu_check.ROOT / "tests/gpu_check.py"), "--workdir", str(tmp_path),
                           "--wheels", str(tmp_path / "none")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "sees no CUDA GPU here" in proc.stderr and "run this on a GPU node" in proc.stderr


def test_a_hung_part_is_killed_with_its_children(tmp_path):
    env = dict(os.environ)
    pidfile = tmp_path / "child.pid"
    script = f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(pidfile)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)"
    log = tmp_path / "part.log"
    assert gpu_check.run_logged([sys.executable, "-c", script], log, env, timeout=2) == 124
    assert "started" in log.read_text() and "TIMED OUT after 2 s" in log.read_text()
    status = Path(f"/proc/{int(pidfile.read_text())}/status")
    for _ in range(50):  # the part's own children went with it (dead, or a zombie nobody reaped yet)
        try:
            if "\nState:\tZ" in status.read_text():
                break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the hung part's child is still running")
    assert gpu_check.run_logged([sys.executable, "-c", "raise SystemExit(3)"], log, env, timeout=30) == 3


def test_missing_compiler_and_headers_for_triton_are_named(monkeypatch, tmp_path):
    pytest.importorskip("triton")
    assert gpu_check.triton_build_problems() == []  # this machine builds kernels for the interpreter's tests
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: None)
    monkeypatch.setattr(gpu_check.sysconfig, "get_paths", lambda: {"include": str(tmp_path)})
    problems = gpu_check.triton_build_problems()
    assert len(problems) == 2
    assert "no C compiler" in problems[0] and f"no Python.h in {tmp_path}" in problems[1]
