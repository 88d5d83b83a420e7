"""Property tests: the fast models against a direct re-implementation written here.

The reference below reads the raw parameters and follows the authors' Keras code step
by step, in float64: K and V zero-padded to p·ceil(N/p) and cut into explicit chunks,
one 'same'-padded Conv2d per height (TF padding: the odd extra row/column goes to the
bottom/right), averaged, tanh DyT, max over particles. Random N, p (N not divisible by
p, odd p, p > N), classes, heads, depth and conv heights (even ones too).
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from salt.models import ModelSpec, build_model

torch.set_num_threads(1)


def tf_same_conv(image: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Keras Conv2D(1 filter, padding='same') of (B, 1, N, p) images by a (h, w) kernel."""
    h, w = kernel.shape
    top, left = (h - 1) // 2, (w - 1) // 2
    padded = F.pad(image, (left, w - 1 - left, top, h - 1 - top))
    return F.conv2d(padded, kernel[None, None], bias)


def reference_forward(model, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of `model`'s spec and weights, computed the long way in float64."""
    s = model.spec
    P = {k: v.detach().double() for k, v in model.state_dict().items()}
    x = x.double()
    b, n, _ = x.shape
    h, dk, p = s.heads, s.head_dim, s.partitions
    use_mask = s.mask and mask is not None
    m = mask.double()[..., None] if use_mask else None

    def dense(z, name, act=None):
        z = z @ P[f"{name}.weight"].t() + P[f"{name}.bias"]
        return torch.relu(z) if act == "relu" else z

    def dyt(z, name):
        return torch.tanh(P[f"{name}.alpha"] * z + P[f"{name}.beta"])

    z = dense(x, "embed", "relu")
    for i in range(s.blocks):
        pre = f"blocks.{i}"
        a_in = z * m if use_mask else z
        q, k, v = (a_in @ P[f"{pre}.attn.{w}.weight"].t() for w in "qkv")
        q, k, v = (t.view(b, n, h, dk).transpose(1, 2) for t in (q, k, v))  # (B, H, N, dk)
        if s.attention == "full":
            logits = q @ k.transpose(-1, -2) / math.sqrt(dk)
            if use_mask:
                keep = mask | ~mask.any(1, keepdim=True)
                logits = logits.masked_fill(~keep[:, None, None, :], float("-inf"))
            out = torch.softmax(logits, -1) @ v
        else:
            E, Fw = P[f"{pre}.attn.E"], P[f"{pre}.attn.F"]
            if s.partitioned:
                chunk = math.ceil(n / p)
                kp = torch.zeros(b, h, p * chunk, dk, dtype=torch.float64)
                vp = torch.zeros_like(kp)
                kp[:, :, :n], vp[:, :, :n] = k, v
                k_proj = torch.zeros(b, h, p, dk, dtype=torch.float64)
                v_proj = torch.zeros_like(k_proj)
                for c in range(p):
                    for slot in range(chunk):
                        k_proj[:, :, c] += E[:, c, slot][None, :, None] * kp[:, :, c * chunk + slot]
                        v_proj[:, :, c] += Fw[:, c, slot][None, :, None] * vp[:, :, c * chunk + slot]
            else:
                k_proj = torch.einsum("bhnd,hnr->bhrd", k, E)
                v_proj = torch.einsum("bhnd,hnr->bhrd", v, Fw)
            logits = q @ k_proj.transpose(-1, -2) / math.sqrt(dk)  # (B, H, N, p)
            if s.conv:
                image = logits.reshape(b * h, 1, n, p)
                convs = [tf_same_conv(image, P[f"{pre}.attn.conv.kernels.{j}"], P[f"{pre}.attn.conv.bias"][j:j + 1])
                         for j in range(len(s.conv_heights))]
                logits = torch.stack(convs).mean(0).reshape(b, h, n, p)
            out = torch.softmax(logits, -1) @ v_proj
        attn = dense(out.transpose(1, 2).reshape(b, n, s.d_model), f"{pre}.attn.out")
        o1 = dyt(z + attn, f"{pre}.dyt1")
        ffn = dense(dense(o1, f"{pre}.ffn1", "relu"), f"{pre}.ffn2")
        z = dyt(o1 + ffn, f"{pre}.dyt2")
    if use_mask:
        keep = mask[..., None]
        if s.aggregation == "max":
            pooled = z.masked_fill(~keep, float("-inf")).amax(1)
            pooled = torch.where(mask.any(1, keepdim=True), pooled, torch.zeros_like(pooled))
        else:
            pooled = (z * keep).sum(1)
            if s.aggregation == "mean":
                pooled = pooled / keep.sum(1).clamp(min=1)
    else:
        pooled = {"max": lambda t: t.amax(1), "mean": lambda t: t.mean(1), "sum": lambda t: t.sum(1)}[s.aggregation](z)
    for j in range(s.hidden_layers):
        pooled = dense(pooled, f"hidden.{j}", "relu")
    return dense(pooled, "out")


def random_spec(rng: random.Random, variant: str, mask: bool = False) -> ModelSpec:
    n = rng.randint(1, 41)
    heads = rng.choice([1, 2, 4])
    spec = {"model": variant, "particles": n, "classes": rng.choice([1, 2, 3, 5, 10]),
            "partitions": rng.randint(1, 9), "blocks": rng.choice([1, 1, 2, 3]), "heads": heads,
            "d_model": heads * rng.choice([2, 4]), "d_ff": rng.choice([8, 16]), "features": rng.choice([2, 3, 4]),
            "mask": mask, "aggregation": rng.choice(["max", "max", "mean", "sum"])}
    if variant in ("salt", "salt_nopartition"):
        spec["conv_heights"] = sorted(rng.sample([1, 2, 3, 4, 5, 7, 9], rng.randint(1, 3)))
    return ModelSpec.from_dict(spec)


VARIANT_CASES = [(v, seed) for v in ("salt", "salt_noconv", "salt_nopartition", "linformer", "transformer")
                 for seed in range(8)]


@pytest.mark.parametrize("variant, seed", VARIANT_CASES)
def test_matches_direct_implementation(variant, seed):
    rng = random.Random(f"{variant}-{seed}")
    spec = random_spec(rng, variant)
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():  # random, non-default DyT and biases so nothing hides behind init values
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta", "bias")):
                p.uniform_(-0.8, 1.2)
    x = torch.randn(7, spec.particles, spec.features) * 2
    want = reference_forward(model, x)
    for impl in ("fused", "straightforward"):
        model.set_impl(impl)
        got = model(x)
        assert torch.allclose(got.double(), want, atol=2e-5, rtol=1e-5), (impl, spec, (got.double() - want).abs().max())
        with torch.no_grad():
            got = model(x)
        assert torch.allclose(got.double(), want, atol=2e-5, rtol=1e-5), (impl, "no_grad", spec)


@pytest.mark.parametrize("variant, seed", [(v, s) for v, s in VARIANT_CASES if s < 4])
def test_masked_matches_direct_implementation(variant, seed):
    rng = random.Random(f"mask-{variant}-{seed}")
    spec = random_spec(rng, variant, mask=True)
    torch.manual_seed(seed)
    model = build_model(spec)
    x = torch.randn(6, spec.particles, spec.features)
    counts = torch.randint(0, spec.particles + 1, (6, 1))
    mask = torch.arange(spec.particles)[None] < counts
    want = reference_forward(model, x, mask)
    for impl in ("fused", "straightforward"):
        got = model.set_impl(impl)(x, mask)
        assert torch.allclose(got.double(), want, atol=2e-5, rtol=1e-5), (impl, spec)


@pytest.mark.parametrize("n, p", [(150, 4), (150, 8), (16, 4), (200, 4), (7, 3), (5, 4), (3, 4), (10, 10), (1, 1)])
def test_partition_layout(n, p):
    """Partition c holds the contiguous slots [c·chunk, (c+1)·chunk) of the sorted sequence; the
    last one is short or empty, never padded with real slots of another."""
    spec = ModelSpec(model="salt_noconv", particles=n, classes=2, partitions=p)
    attn = build_model(spec).blocks[0].attn
    chunk = math.ceil(n / p)
    assert attn.E.shape == (spec.heads, p, chunk)
    x = torch.zeros(1, n, spec.d_model)
    with torch.no_grad():
        attn.E.fill_(1.0)
        for slot in range(n):
            x.zero_()
            x[0, slot] = 1.0
            proj = attn.project(x)  # (1, p, 2, H, d)
            hit = proj[0, :, 0, 0, :].abs().sum(-1)
            assert hit.nonzero().flatten().tolist() == [slot // chunk]


def test_fused_conv_equals_averaged_heights():
    """The one fused kernel gives what averaging the separate 'same' convolutions gives."""
    torch.manual_seed(0)
    for heights, p in [((1, 3, 5), 4), ((1, 3, 5, 7, 9), 4), ((2,), 4), ((1, 4), 3), ((3, 6), 5), ((1,), 1)]:
        spec = ModelSpec(model="salt", particles=11, classes=2, partitions=p, conv_heights=heights)
        conv = build_model(spec).blocks[0].attn.conv
        logits = torch.randn(3, spec.heads, 11, p)
        want = torch.stack([tf_same_conv(logits.reshape(-1, 1, 11, p), k, conv.bias[i:i + 1])
                            for i, k in enumerate(conv.kernels)]).mean(0).reshape(logits.shape)
        got = conv(logits.permute(0, 2, 1, 3).reshape(3, 11, spec.heads * p))
        got = got.view(3, 11, spec.heads, p).permute(0, 2, 1, 3)
        assert torch.allclose(got, want, atol=1e-5), heights
        assert torch.allclose(conv.straightforward(logits), want, atol=1e-5), heights
