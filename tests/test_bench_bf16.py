"""bf16 autocast inference (the benchmark's bf16 precision) for every variant and forward path.

Regression test: without autograd the fused path caches weight-only products; a product made
under autocast is bf16, and reusing it in an fp32 pass (or the reverse) crashed with a dtype
mismatch ("expected m1 and m2 to have the same dtype"). The cache is now keyed on the autocast
state as well.
"""

from __future__ import annotations

import pytest
import torch

from salt.models import MODELS, ModelSpec, build_model
from salt.models.attention import IMPLEMENTATIONS

CASES = [(v, impl) for v in sorted(MODELS) for impl in IMPLEMENTATIONS
         if impl == "fused" or ModelSpec(model=v, particles=4, classes=2).attention != "full"]


def model_and_inputs(variant: str, impl: str, mask: bool = False):
    torch.manual_seed(0)
    spec = ModelSpec(model=variant, particles=23, classes=5, mask=mask, blocks=2)
    model = build_model(spec, impl=impl).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 23, 3, generator=gen)
    m = torch.arange(23)[None] < torch.randint(3, 24, (6, 1), generator=gen)
    return model, x * m[..., None], m


def bf16(model, x, m, grad_mode=torch.no_grad):
    with grad_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x, m)


@pytest.mark.parametrize("variant, impl", CASES)
@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"])
def test_bf16_autocast_forward_matches_fp32_loosely(variant, impl, grad_mode):
    torch.set_num_threads(1)
    model, x, m = model_and_inputs(variant, impl)
    with torch.no_grad():
        fp32_before = model(x, m)
    low = bf16(model, x, m, grad_mode)  # after an fp32 pass: fp32 products are cached
    with torch.no_grad():
        fp32_after = model(x, m)  # after a bf16 pass: bf16 products must not be reused here
    again = bf16(model, x, m, grad_mode)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), fp32_before, atol=0.05, rtol=0.05)
    assert torch.equal(fp32_after, fp32_before)  # fp32 numbers untouched by the bf16 pass
    assert torch.equal(again, low)


@pytest.mark.parametrize("variant", sorted(MODELS))
def test_bf16_first_then_fp32_with_mask(variant):
    """A fresh model whose first pass is bf16 (the order that crashed), with the padding mask on."""
    torch.set_num_threads(1)
    model, x, m = model_and_inputs(variant, "fused", mask=True)
    low = bf16(model, x, m)
    with torch.no_grad():
        high = model(x, m)
    fresh, _, _ = model_and_inputs(variant, "fused", mask=True)
    with torch.no_grad():
        assert torch.equal(high, fresh(x, m))
    torch.testing.assert_close(low.float(), high, atol=0.05, rtol=0.05)
