"""torch.compile and ONNX export of every variant give the eager model's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salt.models import MODELS, ModelSpec, build_model

ALL = sorted(MODELS)


def small_model(variant: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec.from_dict({"model": variant, "particles": 19, "classes": 5, "partitions": 4, **kw}))


def inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 19, 3, generator=gen)
    mask = torch.arange(19)[None] < torch.randint(1, 20, (batch, 1), generator=gen)
    return x, mask


@pytest.mark.slow
@pytest.mark.parametrize("variant", ALL)
def test_torch_compile(variant):
    torch.set_num_threads(1)
    model = small_model(variant, blocks=2)
    compiled = torch.compile(model)
    x, _ = inputs(6)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)
    out = compiled(x)  # training step: gradients through the compiled graph
    out.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model(x).square().sum().backward()
    for name, p in model.named_parameters():
        assert torch.allclose(grads[name], p.grad, atol=1e-4, rtol=1e-4), name


def export_and_run(model: torch.nn.Module, args: tuple, new_args: tuple, path) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in args)
    torch.onnx.export(model, args, str(path), dynamo=True, dynamic_shapes=dynamic)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), new_args)}
    return session.run(None, feeds)[0]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ALL)
def test_onnx_export_matches_eager(variant, tmp_path):
    model = small_model(variant).eval()
    x, _ = inputs(4)
    x_new, _ = inputs(9, seed=1)  # another batch size: the batch axis is dynamic
    got = export_and_run(model, (x,), (x_new,), tmp_path / f"{variant}.onnx")
    with torch.no_grad():
        want = model(x_new).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["salt", "transformer"])
def test_onnx_export_with_mask(variant, tmp_path):
    model = small_model(variant, mask=True, classes=1).eval()
    x, mask = inputs(4)
    x_new, mask_new = inputs(7, seed=2)
    got = export_and_run(model, (x, mask), (x_new, mask_new), tmp_path / f"{variant}.onnx")
    with torch.no_grad():
        want = model(x_new, mask_new).numpy()
    assert np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize("variant", ["part", "salt_pair"])
def test_onnx_export_with_a_pairwise_bias(variant, tmp_path):
    """The pair features (atan2, remainder, the Minkowski matmul) and the calibration buffers export."""
    model = small_model(variant, pair_hidden=5).eval()
    model.pair.calibrate(["pt", "deta", "dphi"], {"center": [30.0, 0.0, 0.0], "scale": [50.0, 0.5, 0.5]})
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.pair.embed.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    x, mask = inputs(4)
    x_new, mask_new = inputs(7, seed=2)
    x, x_new = x * mask[..., None], x_new * mask_new[..., None]
    got = export_and_run(model, (x, mask), (x_new, mask_new), tmp_path / f"{variant}.onnx")
    with torch.no_grad():
        want = model(x_new, mask_new).numpy()
        assert np.abs(want - model(x_new).numpy()).max() > 1e-4  # the mask reaches the pair features
    assert np.abs(got - want).max() < 1e-4
