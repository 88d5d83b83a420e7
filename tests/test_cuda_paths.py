"""Training and evaluation on a GPU: fp32 and bf16, the streaming feed with pinned memory, checkpoint and
resume on cuda (the GPU's RNG included), DistributedDataParallel over NCCL, and the CPU halves of the
same code paths (the RNG state without a GPU, a torchrun world of one over gloo).

Tests marked `gpu` are skipped without CUDA (tests/conftest.py); `make gpu-check` runs them on a GPU
node. Modules beyond torch and numpy (hdf5plugin for the shards, tqdm for the trainer) are imported
inside the fixtures, so a GPU image without them reports the tests it cannot run and runs the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from salt.models import MODELS

ROOT = Path(__file__).resolve().parent.parent
SCHEDULE = [[32, 2], [64, 1]]
SEED = 3


def _require(*modules: str) -> None:
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"needs {module} (a dependency of salt: pip install {module}, or the wheels the README's "
                        "'On a GPU node' names)")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    _require("hdf5plugin", "tqdm", "h5py")
    from jetshards import write_dataset

    return write_dataset(tmp_path_factory.mktemp("data"), chunk_jets=64)


def run(data, out: Path, device: str, spec=None, **settings):
    from salt.train import train
    from salt.training.settings import TrainSettings

    s = TrainSettings.from_dict({"schedule": SCHEDULE, "loader": "memory", "workers": 0} | settings)
    return train(data, dict(spec or {"model": "linformer"}), s, seed=SEED, device=device, out_dir=out)


def weights(out: Path) -> dict[str, torch.Tensor]:
    from salt.models import load_model

    return load_model(out / "model.pt")[0].state_dict()


def assert_close(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=atol), (k, float((a[k] - b[k]).abs().max()))


def torchrun(data, out: Path, device: str, log: Path, spec=None) -> subprocess.CompletedProcess:
    """`salt train` as one rank under torchrun (a world of one joins the process group)."""
    settings = {"schedule": SCHEDULE, "loader": "memory", "workers": 0}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", "salt.cli",
           "train", "--manifest", str(data), "--spec", json.dumps(spec or {"model": "linformer"}),
           "--train-config", json.dumps(settings), "--seed", str(SEED), "--device", device, "--threads", "1",
           "--output-dir", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with open(log, "w") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=300)


# --------------------------------------------------------------------------- CPU halves


def test_rng_state_round_trip_on_cpu_ignores_a_cuda_state():
    from salt.training.checkpoint import rng_state, set_rng_state

    cpu = torch.device("cpu")
    state = rng_state(cpu)
    assert "cuda" not in state
    first = torch.rand(3)
    # a checkpoint written on a GPU resumes on a CPU: its CUDA state is ignored, the rest restored
    set_rng_state(state | {"cuda": torch.zeros(16, dtype=torch.uint8)}, cpu)
    assert torch.equal(torch.rand(3), first)


@pytest.mark.parametrize("device, backend, rank_device", [
    pytest.param("cpu", "gloo", "cpu", marks=pytest.mark.slow),
    pytest.param("cuda", "nccl", "cuda:0", marks=pytest.mark.gpu)])
def test_torchrun_world_of_one_joins_the_process_group_and_matches_one_process(data, tmp_path, device, backend,
                                                                                rank_device):
    """DDP as a world of one: NCCL with the rank's GPU on cuda (a one-GPU node tests the NCCL path), gloo
    on a CPU; the weights are those of a single process."""
    run(data, tmp_path / "one", device)
    log = tmp_path / "rank.log"
    proc = torchrun(data, tmp_path / "ddp", device, log)
    assert proc.returncode == 0, log.read_text()[-3000:]
    from salt.models import load_model

    summary = load_model(tmp_path / "ddp/model.pt")[1]["summary"]
    assert (summary["world_size"], summary["ddp_backend"], summary["device"]) == (1, backend, rank_device)
    assert f"backend {backend}" in log.read_text()
    assert_close(weights(tmp_path / "ddp"), weights(tmp_path / "one"))


def test_training_on_cuda_runs_deterministic_kernels_and_restores_the_settings(monkeypatch):
    """Strict deterministic mode (PyTorch keeps the fused attention backward nondeterministic under
    warn_only) and fp32 convolutions for the run, so a resumed run repeats an uninterrupted one
    (checked on a GPU by test_cuda_resume_after_a_signal_gives_the_same_weights); restored after it.
    A CPU run changes nothing."""
    from salt.numerics import reproducible_training

    def flags():
        return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, conv_precision())

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    before = flags()
    assert before[:3] == (False, False, False) and before[4] != "ieee"
    with reproducible_training(torch.device("cpu")):
        assert flags() == before and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with pytest.raises(KeyError), reproducible_training(torch.device("cuda", 0)):
        assert flags() == (True, False, True, False, "ieee")
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        raise KeyError("a failing run")
    assert flags() == before


def conv_precision() -> str:
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv.fp32_precision
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


def test_fp32_convolutions_turn_tf32_off_and_back_on():
    from salt.numerics import fp32_convolutions

    before = conv_precision()
    assert before == "tf32"  # PyTorch's default: why the context exists
    with fp32_convolutions():
        assert conv_precision() == "ieee"
    assert conv_precision() == before


# --------------------------------------------------------------------------- GPU


# aten ops whose CUDA kernels raise under torch.use_deterministic_algorithms(True) (PyTorch's list
# in that function's documentation, as op names; median and scatter_reduce whole, though only
# median with indices and scatter_reduce's 'prod' raise)
STRICT_REFUSES = {"avg_pool3d_backward", "adaptive_avg_pool2d_backward", "adaptive_avg_pool3d_backward",
                  "adaptive_max_pool2d_backward", "fractional_max_pool2d_backward", "fractional_max_pool3d_backward",
                  "max_unpool2d", "max_unpool3d", "upsample_linear1d_backward", "upsample_bilinear2d_backward",
                  "upsample_bicubic2d_backward", "upsample_trilinear3d_backward", "reflection_pad1d_backward",
                  "reflection_pad2d_backward", "reflection_pad3d_backward", "nll_loss2d_forward",
                  "_ctc_loss_backward", "_embedding_bag_backward", "put_", "put", "histc", "bincount", "median",
                  "grid_sampler_2d_backward", "cumsum", "cumsum_", "scatter_reduce"}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_training_uses_no_op_that_strict_determinism_refuses_on_cuda(model):
    """Training on a GPU runs under PyTorch's strict deterministic mode (salt.numerics), where these
    ops raise: every aten op of a training step (forward, loss, backward, both optimizers), recorded
    on the CPU, must stay off the list, so a model change cannot first fail on a GPU node."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from salt.models import ModelSpec, build_model
    from salt.training.optim import KerasAdam, loss_sum, n_correct

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    seen: set[str] = set()
    for mask, classes in ((False, 1), (True, 5)):
        spec = ModelSpec(model=model, particles=12, classes=classes, mask=mask)
        torch.manual_seed(0)
        net = build_model(spec)
        x, keep = torch.randn(3, 12, spec.features), torch.rand(3, 12) > 0.3
        y = torch.randint(0, max(2, classes), (3,))
        with Record() as record:
            for optimizer in (KerasAdam(net.parameters()), torch.optim.Adam(net.parameters())):
                optimizer.zero_grad()
                logits = net(x, keep if mask else None)
                loss_sum(logits, y).backward()
                optimizer.step()
                n_correct(logits, y)
        seen |= record.ops
    assert {"addmm", "mm"} & seen, sorted(seen)  # the recording saw the step
    assert not seen & STRICT_REFUSES, f"{model}: {sorted(seen & STRICT_REFUSES)} raise under strict determinism on CUDA"


@contextlib.contextmanager
def fake_cuda_model(spec):
    """`spec`'s model with CUDA parameters that carry no data (PyTorch's fake tensors), inside the
    fake mode that made them. Needs a CUDA build of torch, not a GPU (the CPU wheel cannot even
    initialise a fake CUDA tensor): these tests run in `make compat-test` (PyPI's torch 2.11) and
    are skipped under the CPU wheel."""
    if not torch.backends.cuda.is_built():
        pytest.skip("needs a CUDA build of torch (it runs without a GPU): `make compat-test` has one")
    from torch._subclasses.fake_tensor import FakeTensorMode

    from salt.models import build_model

    with FakeTensorMode():
        with torch.device("cuda"):  # only here: inside a forward, a tensor made without a device is on the CPU
            net = build_model(spec)
        yield net


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_forward_keeps_to_the_inputs_device_on_cuda_tensors_without_a_gpu(model):
    """Each model's forward, in training mode, without autograd (the inference path with its cached
    weight products) and under bf16 autocast, on fake CUDA tensors: a tensor made on the CPU inside a
    forward raises here instead of first on a GPU node."""
    from salt.models import ModelSpec

    for mask, classes in ((False, 1), (True, 5)):
        spec = ModelSpec(model=model, particles=12, classes=classes, mask=mask)
        with fake_cuda_model(spec) as net:
            x = torch.randn(3, 12, spec.features, device="cuda")
            keep = torch.rand(3, 12, device="cuda") > 0.3
            outs = [net(x, keep if mask else None)]
            net.eval()
            with torch.no_grad():
                outs.append(net(x, keep if mask else None))
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    outs.append(net(x, keep if mask else None))
        assert all(o.device.type == "cuda" and o.shape == (3, classes) for o in outs), [(o.device, o.shape) for o in outs]


@pytest.mark.gpu
@pytest.mark.parametrize("precision, loader", [("fp32", "memory"), ("bf16", "stream")])
def test_cuda_training_records_the_gpu(data, tmp_path, precision, loader):
    """fp32 and bf16 autocast train on the GPU; the streaming feed pins memory and copies without
    blocking; what ran is recorded in the history, the summary and the provenance."""
    import csv

    from salt.models import load_model

    summary = run(data, tmp_path / "run", "cuda", precision=precision, loader=loader, workers=2 if loader == "stream" else 0)
    assert summary["device"].startswith("cuda") and summary["precision"] == precision
    assert summary["loaders"]["train"] == loader and summary["ddp_backend"] is None
    with open(tmp_path / "run/history.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["device"].startswith("cuda") and r["precision"] == precision for r in rows)
    model, extra = load_model(tmp_path / "run/model.pt")
    assert extra["provenance"]["device"]["gpu"] == torch.cuda.get_device_name()
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())


@pytest.mark.gpu
def test_cuda_rng_state_is_saved_and_restored_per_device():
    from salt.training.checkpoint import rng_state, set_rng_state

    last = torch.device("cuda", torch.cuda.device_count() - 1)
    state = rng_state(last)
    assert isinstance(state["cuda"], torch.Tensor)
    first = torch.rand(4, device=last)
    set_rng_state(state, last)
    assert torch.equal(torch.rand(4, device=last), first)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("model", ["salt", "linformer", "transformer", "part", "salt_pair"])
def test_every_model_trains_on_cuda_under_deterministic_kernels(data, tmp_path, model, precision):
    """Strict deterministic mode raises on any op without a deterministic kernel: every model family
    (logit convolution, SDPA with and without a pair bias, the pair features) trains under it."""
    summary = run(data, tmp_path / "run", "cuda", {"model": model}, precision=precision, schedule=[[64, 1]])
    assert summary["device"].startswith("cuda") and summary["precision"] == precision
    assert all(torch.isfinite(p).all() for p in weights(tmp_path / "run").values())


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["linformer", "salt", "transformer"])  # conv and fused-attention backwards
def test_cuda_resume_after_a_signal_gives_the_same_weights(data, tmp_path, monkeypatch, model):
    from salt.training.checkpoint import CHECKPOINT_FORMAT
    from salt.training.signals import SIGNAL_HOOK_ENV, Preempted

    spec = {"model": model}
    run(data, tmp_path / "ref", "cuda", spec)
    out = tmp_path / "int"
    monkeypatch.setenv(SIGNAL_HOOK_ENV, "23")   # inside epoch 1 (19 batches of 32 per epoch)
    with pytest.raises(Preempted):
        run(data, out, "cuda", spec)
    payload = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT and isinstance(payload["rng"]["cuda"], torch.Tensor)
    monkeypatch.delenv(SIGNAL_HOOK_ENV)
    summary = run(data, out, "cuda", spec)
    assert summary["attempts"] == 2
    assert_close(weights(out), weights(tmp_path / "ref"))


@pytest.mark.gpu
def test_cuda_evaluation_matches_the_cpu(data, tmp_path):
    from salt.evaluate import evaluate
    from salt.identity import RunIdentity

    run(data, tmp_path / "run", "cuda")
    identity = RunIdentity("synthetic", "linformer", "kt", SEED)
    on_gpu, gpu_arrays, gpu_maps = evaluate(tmp_path / "run/model.pt", data, identity=identity, device="cuda")
    on_cpu, cpu_arrays, cpu_maps = evaluate(tmp_path / "run/model.pt", data, identity=identity, device="cpu")
    assert gpu_maps.jets.tolist() == cpu_maps.jets.tolist()
    torch.testing.assert_close(torch.from_numpy(gpu_maps.maps), torch.from_numpy(cpu_maps.maps), rtol=1e-4, atol=1e-5,
                               equal_nan=True)
    assert on_gpu["provenance"]["device"]["gpu"] == torch.cuda.get_device_name()
    torch.testing.assert_close(torch.from_numpy(gpu_arrays["scores"]), torch.from_numpy(cpu_arrays["scores"]),
                               rtol=1e-4, atol=1e-5)
    assert on_gpu["metrics"]["accuracy"] == pytest.approx(on_cpu["metrics"]["accuracy"], abs=2 / len(cpu_arrays["labels"]))


@pytest.mark.parametrize("model", ["salt", "linformer", "salt_noconv", "salt_nopartition"])
def test_fused_kernel_packs_every_weight_on_the_models_cuda_device_without_a_gpu(model):
    """The fused kernel's weight packing (salt/kernels/fused.py) on a model whose parameters are fake
    CUDA tensors: every packed tensor lands on the model's device, so the launch gets no CPU pointer."""
    from salt.kernels.fused import FusedClassifier
    from salt.models import ModelSpec

    for mask in (False, True):
        with fake_cuda_model(ModelSpec(model=model, particles=150, classes=5, mask=mask)) as net:
            packed = dict(FusedClassifier(net.eval()).named_buffers())
        # the kernel's weight arguments
        assert set(packed) >= {"we", "be", "pe", "wk", "wq", "wv", "wo", "bo", "mc", "cb", "w1", "b1", "w2", "b2",
                               "dyt", "wh", "bh", "wout", "bout"}, sorted(packed)
        assert {name: t.device.type for name, t in packed.items() if t.device.type != "cuda"} == {}
